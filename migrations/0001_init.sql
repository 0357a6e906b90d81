-- Conversations, messages (saved while they stream), per-message generation stats,
-- settings (JSON values) and resumable downloads.

CREATE TABLE conversations (
    id            INTEGER PRIMARY KEY,
    title         TEXT    NOT NULL,
    system_prompt TEXT    NOT NULL DEFAULT '',
    -- SamplingParams as JSON; NULL means "use the default sampling from settings".
    sampling_json TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE messages (
    -- AUTOINCREMENT: a regenerated reply never reuses the id of the one it replaced, so a
    -- late stream event for the old id cannot land on the new message.
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    role            TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content         TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'complete'
                    CHECK (status IN ('complete', 'streaming', 'interrupted', 'error')),
    error           TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX messages_by_status ON messages(status);

CREATE TABLE generation_stats (
    message_id        INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    model             TEXT    NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    ttft_s            REAL    NOT NULL,
    prefill_tok_s     REAL    NOT NULL,
    decode_tok_s      REAL    NOT NULL,
    finish_reason     TEXT    NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE downloads (
    id          INTEGER PRIMARY KEY,
    repo        TEXT    NOT NULL,
    revision    TEXT    NOT NULL,
    commit_sha  TEXT,
    file        TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT    NOT NULL,
    etag        TEXT,
    dest        TEXT    NOT NULL,
    bytes_done  INTEGER NOT NULL DEFAULT 0,
    status      TEXT    NOT NULL
                CHECK (status IN ('queued', 'running', 'paused', 'verifying', 'complete', 'failed', 'cancelled')),
    error       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
