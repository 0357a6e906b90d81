-- Remote OpenAI-compatible endpoints a conversation can use instead of the local engine.
-- The API key is never stored here: it lives in the OS keyring (or the 0600 secrets file);
-- `has_key` only says whether one was saved.
CREATE TABLE remote_endpoints (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    url        TEXT    NOT NULL,
    model      TEXT    NOT NULL,
    has_key    INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Per-conversation backend: NULL = the app's default, else JSON
-- {"kind":"local"} or {"kind":"remote","endpoint_id":N}.
ALTER TABLE conversations ADD COLUMN backend_json TEXT;

-- 1 when the app (exit or crash), not the user, stopped the download: it resumes by
-- itself at the next start unless the setting turns that off.
ALTER TABLE downloads ADD COLUMN auto_resume INTEGER NOT NULL DEFAULT 0;
