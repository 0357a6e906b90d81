import { useEffect, useRef, useState } from "preact/hooks";
import { api } from "../services/api";
import { errorMessage } from "../services/types";
import { chatStore } from "../stores/chat";
import { engineStore } from "../stores/engine";
import { backendLabel, settingsStore } from "../stores/settings";
import { useStore } from "../stores/store";
import { ChatSettingsPanel } from "./ChatSettingsPanel";
import { ConversationList } from "./ConversationList";
import { Icon } from "./Icon";
import { MessageItem } from "./MessageItem";

export function ChatScreen() {
  const st = useStore(chatStore);
  const engine = useStore(engineStore);
  const [draft, setDraft] = useState("");
  const [showSettings, setShowSettings] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  const scroller = useRef<HTMLDivElement>(null);
  const conv = st.conversations.find((c) => c.id === st.activeId) ?? null;
  const busy = st.streamingId != null;
  const sst = useStore(settingsStore);
  useEffect(() => { if (!sst.view) void settingsStore.load(); }, []);
  const backend = conv?.backend ?? sst.view?.settings.default_backend ?? { kind: "local" as const };
  const remote = backend.kind === "remote";
  // A remote conversation needs no local model.
  const ready = remote || engine.status.state === "ready";
  const lastAssistant = [...st.messages].reverse().find((m) => m.role === "assistant");

  useEffect(() => {
    const el = scroller.current;
    if (el && el.scrollHeight - el.scrollTop - el.clientHeight < 160) el.scrollTop = el.scrollHeight;
  }, [st.messages]);

  const submit = () => {
    const t = draft.trim();
    if (!t || busy) return;
    setDraft("");
    void chatStore.send(t);
  };

  const exportAs = async (format: "markdown" | "json") => {
    if (!conv) return;
    try {
      const p = await api.exportConversationSave(conv.id, format);
      if (p) setNotice(`Saved to ${p}`);
    } catch (e) {
      setNotice(errorMessage(e));
    }
  };

  return (
    <div class="chat-screen">
      <ConversationList conversations={st.conversations} activeId={st.activeId} query={st.query} />
      <section class="chat-main">
        <header class="chat-head">
          <h2 title={conv?.title}>{conv?.title ?? "New chat"}</h2>
          {remote && (
            <span class="chip remote" data-testid="conv-backend-chip" title="Replies come from a remote endpoint">
              {backendLabel(backend, sst.endpoints)}
            </span>
          )}
          {conv && (
            <div class="row gap">
              <button class="btn ghost sm" onClick={() => void exportAs("markdown")} title="Export as Markdown" data-testid="export-md">
                <Icon name="export" size={15} /> Markdown
              </button>
              <button class="btn ghost sm" onClick={() => void exportAs("json")} title="Export as JSON" data-testid="export-json">
                <Icon name="export" size={15} /> JSON
              </button>
              <button class="btn ghost sm" onClick={() => setShowSettings(true)} data-testid="conv-settings">
                <Icon name="sliders" size={15} /> Settings
              </button>
            </div>
          )}
        </header>
        <div class="messages" ref={scroller} data-testid="messages">
          {st.messages.length === 0 && (
            <div class="welcome">
              <h1>Hybrid MoE Studio</h1>
              <p>Chat with Mixture-of-Experts models on your own machine. Experts move between CPU and GPU per token.</p>
              {!ready && <p class="muted">Load a model in <a href="#/models">Models</a> to start.</p>}
            </div>
          )}
          {st.messages.map((m) => (
            <MessageItem key={m.id} message={m} streaming={m.id === st.streamingId} busy={busy}
              canRegenerate={m.id === lastAssistant?.id}
              onRegenerate={() => void chatStore.regenerate()}
              onEditResend={(t) => void chatStore.editResend(m.id, t)} />
          ))}
        </div>
        {(st.error || notice) && (
          <div class={`banner ${st.error ? "error" : ""}`} role="status" data-testid="chat-notice">
            <span>{st.error ?? notice}</span>
            <button class="icon-btn" onClick={() => { chatStore.clearError(); setNotice(null); }}><Icon name="x" size={14} /></button>
          </div>
        )}
        <form class="composer" onSubmit={(e) => { e.preventDefault(); submit(); }}>
          <textarea data-testid="composer" rows={2} value={draft}
            placeholder={ready ? "Message the model… (Enter to send, Shift+Enter for a new line)" : "No model loaded"}
            onInput={(e) => setDraft((e.target as HTMLTextAreaElement).value)}
            onKeyDown={(e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); } }} />
          {busy ? (
            <button type="button" class="btn danger" onClick={() => void chatStore.stop()} data-testid="stop">
              <Icon name="stop" size={16} /> Stop
            </button>
          ) : (
            <button type="submit" class="btn primary" disabled={!draft.trim() || !ready} data-testid="send">
              <Icon name="send" size={16} /> Send
            </button>
          )}
        </form>
      </section>
      {showSettings && conv && <ChatSettingsPanel conv={conv} onClose={() => setShowSettings(false)} />}
    </div>
  );
}
