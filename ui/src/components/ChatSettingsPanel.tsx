import { useEffect, useState } from "preact/hooks";
import type { BackendChoice, Conversation, ConversationSettings, SamplingParams } from "../services/types";
import { chatStore } from "../stores/chat";
import { backendLabel, settingsStore } from "../stores/settings";
import { useStore } from "../stores/store";

/** Select value of a backend choice ("default" = the app's). */
const backendKey = (b: BackendChoice | null) => (b == null ? "default" : b.kind === "local" ? "local" : `remote:${b.endpoint_id}`);
const fromKey = (k: string): BackendChoice | null =>
  k === "default" ? null : k === "local" ? { kind: "local" } : { kind: "remote", endpoint_id: Number(k.slice(7)) };

/** Per-conversation system prompt and sampling (or "use defaults"). */
export function ChatSettingsPanel({ conv, onClose }: { conv: Conversation; onClose: () => void }) {
  const sst = useStore(settingsStore);
  const defaults = sst.view?.settings;
  useEffect(() => { if (!sst.view) void settingsStore.load(); }, []);
  const [backend, setBackend] = useState(backendKey(conv.backend));
  const base: ConversationSettings = conv.settings ?? {
    sampling: defaults?.default_sampling ?? {
      temperature: 0.7, top_k: 20, top_p: 0.8, min_p: 0, repetition_penalty: 1, repetition_window: 64, seed: 0,
      max_tokens: 512, stop: [],
    },
    enable_thinking: defaults?.enable_thinking ?? false,
  };
  const [system, setSystem] = useState(conv.system_prompt);
  const [own, setOwn] = useState(conv.settings != null);
  const [s, setS] = useState<ConversationSettings>(base);
  const num = (k: keyof SamplingParams) => (e: Event) =>
    setS({ ...s, sampling: { ...s.sampling, [k]: Number((e.target as HTMLInputElement).value) } });

  return (
    <div class="side-sheet" role="dialog" aria-label="Conversation settings">
      <h3>Conversation settings</h3>
      <label class="field">
        <span>Answered by</span>
        <select value={backend} data-testid="conv-backend" onChange={(e) => setBackend((e.target as HTMLSelectElement).value)}>
          <option value="default">
            App default ({backendLabel(defaults?.default_backend ?? { kind: "local" }, sst.endpoints)})
          </option>
          <option value="local">{backendLabel({ kind: "local" }, sst.endpoints)}</option>
          {sst.endpoints.map((ep) => (
            <option key={ep.id} value={`remote:${ep.id}`}>{backendLabel({ kind: "remote", endpoint_id: ep.id }, sst.endpoints)}</option>
          ))}
        </select>
      </label>
      <label class="field">
        <span>System prompt</span>
        <textarea rows={5} value={system} placeholder="You are a helpful assistant."
          onInput={(e) => setSystem((e.target as HTMLTextAreaElement).value)} />
      </label>
      <label class="check">
        <input type="checkbox" checked={own} onChange={(e) => setOwn((e.target as HTMLInputElement).checked)} />
        Own sampling settings (otherwise the defaults from Settings)
      </label>
      <fieldset disabled={!own}>
        <div class="grid2">
          <label class="field"><span>Temperature</span>
            <input type="number" step="0.05" min="0" value={s.sampling.temperature} onInput={num("temperature")} /></label>
          <label class="field"><span>Top-p</span>
            <input type="number" step="0.05" min="0" max="1" value={s.sampling.top_p} onInput={num("top_p")} /></label>
          <label class="field"><span>Top-k</span>
            <input type="number" min="0" value={s.sampling.top_k} onInput={num("top_k")} /></label>
          <label class="field"><span>Max tokens</span>
            <input type="number" min="1" value={s.sampling.max_tokens} onInput={num("max_tokens")} /></label>
          <label class="field"><span>Repetition penalty</span>
            <input type="number" step="0.05" min="1" value={s.sampling.repetition_penalty} onInput={num("repetition_penalty")} /></label>
          <label class="field"><span>Seed</span>
            <input type="number" min="0" value={s.sampling.seed} onInput={num("seed")} /></label>
        </div>
        <label class="check">
          <input type="checkbox" checked={s.enable_thinking}
            onChange={(e) => setS({ ...s, enable_thinking: (e.target as HTMLInputElement).checked })} />
          Thinking (Qwen3 <code>enable_thinking</code>)
        </label>
      </fieldset>
      <div class="row end gap">
        <button class="btn ghost" onClick={onClose}>Cancel</button>
        <button class="btn primary" data-testid="conv-settings-save" onClick={() => {
          void (async () => {
            await chatStore.updateSettings(conv.id, system, own ? s : null);
            if (backend !== backendKey(conv.backend)) await chatStore.setBackend(conv.id, fromKey(backend));
          })();
          onClose();
        }}>
          Save
        </button>
      </div>
    </div>
  );
}
