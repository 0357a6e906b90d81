import { useEffect, useState } from "preact/hooks";
import type { AppSettings, SamplingParams } from "../services/types";
import { settingsStore } from "../stores/settings";
import { useStore } from "../stores/store";

export function SettingsScreen() {
  const st = useStore(settingsStore);
  const [s, setS] = useState<AppSettings | null>(st.view?.settings ?? null);
  useEffect(() => void settingsStore.load(), []);
  useEffect(() => { if (st.view) setS(st.view.settings); }, [st.view]);
  if (!s || !st.view) return <div class="page"><p class="muted">Loading settings…</p></div>;

  const samp = (k: keyof SamplingParams) => (e: Event) =>
    setS({ ...s, default_sampling: { ...s.default_sampling, [k]: Number((e.target as HTMLInputElement).value) } });

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
          <h3>Default sampling</h3>
          <div class="grid3">
            <label class="field"><span>Temperature</span><input type="number" step="0.05" min="0" value={s.default_sampling.temperature} onInput={samp("temperature")} /></label>
            <label class="field"><span>Top-p</span><input type="number" step="0.05" min="0" max="1" value={s.default_sampling.top_p} onInput={samp("top_p")} /></label>
            <label class="field"><span>Top-k</span><input type="number" min="0" value={s.default_sampling.top_k} onInput={samp("top_k")} /></label>
            <label class="field"><span>Max tokens</span><input type="number" min="1" value={s.default_sampling.max_tokens} onInput={samp("max_tokens")} /></label>
            <label class="field"><span>Repetition penalty</span><input type="number" step="0.05" min="1" value={s.default_sampling.repetition_penalty} onInput={samp("repetition_penalty")} /></label>
            <label class="check"><input type="checkbox" checked={s.enable_thinking}
              onChange={(e) => setS({ ...s, enable_thinking: (e.target as HTMLInputElement).checked })} /> Thinking on</label>
          </div>
        </section>
        <section class="card form">
          <h3>Hugging Face</h3>
          <div class="grid2">
            <label class="field"><span>Endpoint (HF_ENDPOINT mirror; empty = huggingface.co)</span>
              <input value={s.hf_endpoint} placeholder="https://huggingface.co" data-testid="hf-endpoint"
                onInput={(e) => setS({ ...s, hf_endpoint: (e.target as HTMLInputElement).value })} /></label>
            <label class="field"><span>Access token (for gated repositories)</span>
              <input type="password" value={s.hf_token ?? ""} placeholder="hf_…" autoComplete="off"
                onInput={(e) => { const v = (e.target as HTMLInputElement).value; setS({ ...s, hf_token: v || null }); }} /></label>
          </div>
        </section>
        <section class="card form">
          <h3>Storage</h3>
          <label class="field"><span>Data folder (database and models; set HMOE_STUDIO_DATA to move it)</span>
            <input value={st.view.data_folder} readOnly /></label>
        </section>
        {st.error && <div class="banner error">{st.error}</div>}
        <div class="row end gap">
          {st.saved && <span class="muted">Saved.</span>}
          <button class="btn primary" type="submit" disabled={st.saving} data-testid="save-settings">Save settings</button>
        </div>
      </form>
    </div>
  );
}
