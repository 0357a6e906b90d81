import { useState } from "preact/hooks";
import type { Message } from "../services/types";
import { formatRate } from "../lib/format";
import { splitThinking } from "../lib/thinking";
import { Icon } from "./Icon";
import { Markdown } from "./Markdown";

interface Props {
  message: Message;
  streaming: boolean;
  canRegenerate: boolean;
  busy: boolean;
  onRegenerate: () => void;
  onEditResend: (text: string) => void;
}

export function MessageItem({ message: m, streaming, canRegenerate, busy, onRegenerate, onEditResend }: Props) {
  const [editing, setEditing] = useState(false);
  const [draft, setDraft] = useState(m.content);
  const reply = m.role === "assistant" ? splitThinking(m.content) : null;

  if (m.role === "user") {
    return (
      <div class="msg user" data-testid="message-user" data-id={m.id}>
        {editing ? (
          <div class="edit-box">
            <textarea value={draft} onInput={(e) => setDraft((e.target as HTMLTextAreaElement).value)} rows={4} />
            <div class="row end gap">
              <button class="btn ghost" onClick={() => setEditing(false)}>Cancel</button>
              <button class="btn primary" disabled={busy || !draft.trim()}
                onClick={() => { setEditing(false); onEditResend(draft); }}>Save &amp; resend</button>
            </div>
          </div>
        ) : (
          <>
            <div class="bubble">{m.content}</div>
            <div class="msg-actions">
              <button class="icon-btn" title="Edit and resend" disabled={busy}
                onClick={() => { setDraft(m.content); setEditing(true); }}><Icon name="edit" size={15} /></button>
            </div>
          </>
        )}
      </div>
    );
  }

  return (
    <div class={`msg assistant ${m.status}`} data-testid="message-assistant" data-id={m.id} data-status={m.status}>
      <div class="avatar" aria-hidden="true">M</div>
      <div class="msg-body">
        {reply?.thinking != null && (
          <details class="thinking" open={reply.thinkingOpen && streaming}>
            <summary>{reply.thinkingOpen ? "Thinking…" : "Thought process"}</summary>
            <div class="thinking-text">{reply.thinking}</div>
          </details>
        )}
        {reply && reply.answer ? <Markdown text={reply.answer} /> : !streaming && !reply?.thinking && <p class="muted">(empty reply)</p>}
        {streaming && <span class="cursor" aria-label="generating" />}
        {m.status === "interrupted" && <div class="note warn">Interrupted — the app closed while this reply was streaming.</div>}
        {m.status === "error" && <div class="note error">Error: {m.error}</div>}
        <div class="msg-meta">
          {m.stats && (
            <span class="stats" data-testid="stats">
              {formatRate(m.stats.decode_tok_s)} · TTFT {m.stats.time_to_first_token_s.toFixed(2)} s ·{" "}
              {m.stats.completion_tokens} tokens
              {m.stats.finish_reason === "cancelled" && " · stopped"}
              {m.stats.finish_reason === "length" && " · length limit"}
            </span>
          )}
          {canRegenerate && !streaming && (
            <button class="icon-btn" title="Regenerate" disabled={busy} onClick={onRegenerate} data-testid="regenerate">
              <Icon name="refresh" size={15} />
            </button>
          )}
        </div>
      </div>
    </div>
  );
}
