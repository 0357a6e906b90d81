import { useEffect, useState } from "preact/hooks";
import { formatBytes } from "../lib/format";
import type { AppSettings, BackendChoice, EndpointInput, SamplingParams } from "../services/types";
import { backendLabel, settingsStore } from "../stores/settings";
import { useStore } from "../stores/store";

const emptyEndpoint: EndpointInput = { id: null, name: "", url: "", model: "", api_key: null };

function TokenCard() {
  const st = useStore(settingsStore);
  const [token, setToken] = useState("");
  const v = st.view;
  if (!v) return null;
  return (
    <section class="card form">
      <h3>Hugging Face access token</h3>
      <p class="muted">For gated repositories. Sent only to the Hub endpoint above.</p>
      <div class="row gap wrap">
        {v.hf_token_masked ? (
          <span class="chip" data-testid="token-masked">Saved: <code>{v.hf_token_masked}</code></span>
        ) : (
          <span class="muted">No token saved.</span>
        )}
        {v.hf_token_masked && (
          <button class="btn ghost sm" type="button" onClick={() => void settingsStore.setToken(null)}>Remove</button>
        )}
      </div>
      <div class="row gap">
        <input type="password" value={token} placeholder="hf_…" autoComplete="off" data-testid="hf-token"
          onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
        <button class="btn" type="button" disabled={!token.trim()} data-testid="save-token"
          onClick={() => void settingsStore.setToken(token).then((ok) => ok && setToken(""))}>
          {v.hf_token_masked ? "Replace token" : "Save token"}
        </button>
      </div>
      <p class={`note ${v.secret_storage.kind === "file" ? "warn" : ""}`} data-testid="secret-storage">
        {v.secret_storage.note}
      </p>
    </section>
  );
}

function FolderCard() {
  const st = useStore(settingsStore);
  const v = st.view;
  if (!v) return null;
  const c = st.folderCheck;
  return (
    <section class="card form" data-testid="folder-card">
      <h3>Storage</h3>
      <label class="field"><span>Data folder (database, secrets file; set HMOE_STUDIO_DATA to move it)</span>
        <input value={v.data_folder} readOnly /></label>
      <label class="field"><span>Models folder in use</span>
        <input value={v.models_folder} readOnly data-testid="models-folder" /></label>
      <div class="field">
        <span>Move the models folder to</span>
        <div class="row gap">
          <input value={st.folderPath} placeholder="/path/to/an/existing/folder" data-testid="folder-input"
            onInput={(e) => settingsStore.setFolderPath((e.target as HTMLInputElement).value)} />
          <button class="btn" type="button" onClick={() => void settingsStore.pickFolder()} data-testid="folder-browse">Browse…</button>
          <button class="btn" type="button" disabled={!st.folderPath.trim()} data-testid="folder-check"
            onClick={() => void settingsStore.checkFolder()}>Check</button>
        </div>
      </div>
      {c && !c.ok && (
        <div class="banner error" data-testid="folder-problems">{c.problems.join("; ")}</div>
      )}
      {c && c.ok && (
        <div class="folder-plan" data-testid="folder-plan">
          <p>
            {c.path}: writable, {c.free_bytes != null ? `${formatBytes(c.free_bytes)} free` : "free space unknown"}.
            Your models: {c.models_files} files, {formatBytes(c.models_bytes)}
            {c.same_filesystem ? " (same disk: moving is instant)." : " (another disk: moving copies them)."}
          </p>
          <div class="row gap wrap">
            <button class="btn primary" type="button" disabled={!c.can_move || st.folderBusy} data-testid="folder-move"
              onClick={() => void settingsStore.changeFolder(true)}>
              Move models there
            </button>
            <button class="btn" type="button" disabled={st.folderBusy} data-testid="folder-leave"
              onClick={() => void settingsStore.changeFolder(false)}>
              Switch, leave models here
            </button>
          </div>
          {c.move_problem && <p class="note warn">Cannot move: {c.move_problem}</p>}
          <p class="note">
            Move: every model and unfinished download goes to the new folder and keeps working.
            Leave: they stay in {v.models_folder} and are no longer listed (unfinished downloads there
            cannot resume until you switch back); the demo model is written again in the new folder.
          </p>
        </div>
      )}
      {st.folderDone && (
        <p class="note" data-testid="folder-result">
          {st.folderDone.left_in
            ? `Now using ${st.folderDone.models_folder}. Models left in ${st.folderDone.left_in}.`
            : `Moved ${st.folderDone.moved_files} files (${formatBytes(st.folderDone.moved_bytes)}) to ${st.folderDone.models_folder}.`}
        </p>
      )}
    </section>
  );
}

/** Port of `hmoe serve` (DEFAULT_PORT in the server crate). */
const DEFAULT_PORT = 10002;

function ServerCard() {
  const st = useStore(settingsStore);
  const [port, setPort] = useState(DEFAULT_PORT);
  const [key, setKey] = useState("");
  const srv = st.server;
  return (
    <section class="card form" data-testid="server-card">
      <h3>Local API server</h3>
      <p class="muted">
        Serves the loaded model over an OpenAI-compatible API on this computer only (127.0.0.1), like
        <code> hmoe serve</code>. It loads its own engine over the same file.
      </p>
      {srv.running ? (
        <div class="row between wrap gap">
          <span data-testid="server-status">
            Serving <strong>{srv.model}</strong> at <code>{srv.url}</code>{srv.api_key_required ? " (API key required)" : ""}
          </span>
          <button class="btn" type="button" disabled={st.serverBusy} data-testid="server-stop"
            onClick={() => void settingsStore.stopServer()}>Stop server</button>
        </div>
      ) : (
        <div class="row gap wrap">
          <label class="field"><span>Port</span>
            <input type="number" min="0" max="65535" value={port} data-testid="server-port"
              onInput={(e) => setPort(Number((e.target as HTMLInputElement).value))} /></label>
          <label class="field"><span>API key (optional)</span>
            <input type="password" autoComplete="off" value={key} onInput={(e) => setKey((e.target as HTMLInputElement).value)} /></label>
          <button class="btn primary" type="button" disabled={st.serverBusy} data-testid="server-start"
            onClick={() => void settingsStore.startServer(port, key || null).then((ok) => ok && setKey(""))}>
            {st.serverBusy ? "Starting…" : "Start server"}
          </button>
        </div>
      )}
    </section>
  );
}

function EndpointsCard() {
  const st = useStore(settingsStore);
  const [draft, setDraft] = useState<EndpointInput>(emptyEndpoint);
  const field = (k: "name" | "url" | "model") => (e: Event) => setDraft({ ...draft, [k]: (e.target as HTMLInputElement).value });
  return (
    <section class="card form" data-testid="endpoints-card">
      <h3>Remote endpoints</h3>
      <p class="muted">Any OpenAI-compatible server (another hmoe serve, vLLM, SGLang…). A conversation picks one in its settings.</p>
      {st.endpoints.map((ep) => (
        <div class="endpoint-row" key={ep.id} data-testid="endpoint">
          <div>
            <strong>{ep.name}</strong> <span class="muted">{ep.model} · {ep.url}</span>
            {ep.api_key_masked && <span class="chip">key <code>{ep.api_key_masked}</code></span>}
            {st.endpointTests[ep.id] && (
              <div class={`note ${st.endpointTests[ep.id].ok ? "" : "warn"}`} data-testid="endpoint-test-result">
                {st.endpointTests[ep.id].text}
              </div>
            )}
          </div>
          <div class="row gap">
            <button class="btn ghost sm" type="button" onClick={() => void settingsStore.testEndpoint(ep.id)}>Test</button>
            <button class="btn ghost sm" type="button" onClick={() => void settingsStore.deleteEndpoint(ep.id)}>Delete</button>
          </div>
        </div>
      ))}
      <div class="grid2">
        <label class="field"><span>Name</span><input value={draft.name} onInput={field("name")} data-testid="endpoint-name" /></label>
        <label class="field"><span>URL</span><input value={draft.url} placeholder="http://host:10002/v1" onInput={field("url")} data-testid="endpoint-url" /></label>
        <label class="field"><span>Model</span><input value={draft.model} onInput={field("model")} data-testid="endpoint-model" /></label>
        <label class="field"><span>API key (optional; kept in the {st.view?.secret_storage.kind === "keyring" ? "system keyring" : "secrets file"})</span>
          <input type="password" autoComplete="off" value={draft.api_key ?? ""} data-testid="endpoint-key"
            onInput={(e) => { const k = (e.target as HTMLInputElement).value; setDraft({ ...draft, api_key: k || null }); }} /></label>
      </div>
      <div class="row end">
        <button class="btn" type="button" data-testid="endpoint-add"
          disabled={!draft.name.trim() || !draft.url.trim() || !draft.model.trim()}
          onClick={() => void settingsStore.saveEndpoint(draft).then((ep) => ep && setDraft(emptyEndpoint))}>
          Add endpoint
        </button>
      </div>
    </section>
  );
}

export function SettingsScreen() {
  const st = useStore(settingsStore);
  const [s, setS] = useState<AppSettings | null>(st.view?.settings ?? null);
  useEffect(() => void settingsStore.load(), []);
  useEffect(() => { if (st.view) setS(st.view.settings); }, [st.view]);
  if (!s || !st.view) return <div class="page"><p class="muted">Loading settings…</p></div>;

  const samp = (k: keyof SamplingParams) => (e: Event) =>
    setS({ ...s, default_sampling: { ...s.default_sampling, [k]: Number((e.target as HTMLInputElement).value) } });
  const backendValue = (b: BackendChoice) => (b.kind === "local" ? "local" : String(b.endpoint_id));

  return (
    <div class="page narrow">
      <header class="page-head"><div><h2>Settings</h2></div></header>
      <form onSubmit={(e) => { e.preventDefault(); void settingsStore.save(s); }}>
        <section class="card form">
          <h3>Engine</h3>
          <div class="grid2">
            <label class="field"><span>CPU threads (0 = all cores)</span>
              <input type="number" min="0" value={s.threads} data-testid="threads"
                onInput={(e) => setS({ ...s, threads: Number((e.target as HTMLInputElement).value) })} /></label>
            <label class="field"><span>VRAM budget for experts (GiB, empty = all free)</span>
              <input type="number" min="0" step="0.5" value={s.vram_budget_gib ?? ""}
                onInput={(e) => { const v = (e.target as HTMLInputElement).value; setS({ ...s, vram_budget_gib: v === "" ? null : Number(v) }); }} /></label>
            <label class="field"><span>Expert cache policy</span>
              <select value={s.policy} onChange={(e) => setS({ ...s, policy: (e.target as HTMLSelectElement).value })}>
                {st.view.policies.map((p) => <option key={p} value={p}>{p}</option>)}
              </select></label>
            <label class="check"><input type="checkbox" checked={s.prefetch}
              onChange={(e) => setS({ ...s, prefetch: (e.target as HTMLInputElement).checked })} /> Prefetch next-layer experts</label>
          </div>
        </section>
        <section class="card form">
          <h3>Chat defaults</h3>
          <div class="grid3">
            <label class="field"><span>Temperature</span><input type="number" step="0.05" min="0" value={s.default_sampling.temperature} onInput={samp("temperature")} /></label>
            <label class="field"><span>Top-p</span><input type="number" step="0.05" min="0" max="1" value={s.default_sampling.top_p} onInput={samp("top_p")} /></label>
            <label class="field"><span>Top-k</span><input type="number" min="0" value={s.default_sampling.top_k} onInput={samp("top_k")} /></label>
            <label class="field"><span>Max tokens</span><input type="number" min="1" value={s.default_sampling.max_tokens} onInput={samp("max_tokens")} /></label>
            <label class="field"><span>Repetition penalty</span><input type="number" step="0.05" min="1" value={s.default_sampling.repetition_penalty} onInput={samp("repetition_penalty")} /></label>
            <label class="check"><input type="checkbox" checked={s.enable_thinking}
              onChange={(e) => setS({ ...s, enable_thinking: (e.target as HTMLInputElement).checked })} /> Thinking on</label>
          </div>
          <label class="field"><span>Conversations are answered by (unless they choose)</span>
            <select value={backendValue(s.default_backend)} data-testid="default-backend"
              onChange={(e) => {
                const v = (e.target as HTMLSelectElement).value;
                setS({ ...s, default_backend: v === "local" ? { kind: "local" } : { kind: "remote", endpoint_id: Number(v) } });
              }}>
              <option value="local">{backendLabel({ kind: "local" }, st.endpoints)}</option>
              {st.endpoints.map((ep) => <option key={ep.id} value={String(ep.id)}>{backendLabel({ kind: "remote", endpoint_id: ep.id }, st.endpoints)}</option>)}
            </select></label>
        </section>
        <section class="card form">
          <h3>Downloads</h3>
          <label class="field"><span>Hub endpoint (HF_ENDPOINT mirror; empty = huggingface.co)</span>
            <input value={s.hf_endpoint} placeholder="https://huggingface.co" data-testid="hf-endpoint"
              onInput={(e) => setS({ ...s, hf_endpoint: (e.target as HTMLInputElement).value })} /></label>
          <label class="check"><input type="checkbox" checked={s.resume_downloads_on_start} data-testid="resume-downloads"
            onChange={(e) => setS({ ...s, resume_downloads_on_start: (e.target as HTMLInputElement).checked })} />
            Resume downloads that a restart or crash interrupted when the app starts (a download you paused stays paused)</label>
        </section>
        <div class="row end gap">
          {st.saved && <span class="muted">Saved.</span>}
          <button class="btn primary" type="submit" disabled={st.saving} data-testid="save-settings">Save settings</button>
        </div>
      </form>
      {st.error && <div class="banner error" role="status" data-testid="settings-error">{st.error}</div>}
      <TokenCard />
      <EndpointsCard />
      <ServerCard />
      <FolderCard />
    </div>
  );
}
