// Scheduler settings: policy, VRAM budget, prefetch, CPU threads. Applied by the engine
// from the next generation on, without reloading; the line below shows what is in force.
import { useEffect, useState } from "preact/hooks";
import type { RuntimeOptions, SchedOptionsView } from "../services/schedTypes";
import { schedulerStore } from "../stores/scheduler";

const GIB = 1 << 30;

export function SchedulerControls({ options }: { options: SchedOptionsView | null }) {
  const [draft, setDraft] = useState<RuntimeOptions | null>(options?.requested ?? null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    if (options) setDraft(options.requested);
  }, [options?.requested.policy, options?.requested.threads, options?.requested.prefetch, options?.requested.vram_budget_bytes]);
  if (!options || !draft) return <div class="muted small">Loading settings…</div>;
  const a = options.applied;
  const pending =
    a != null &&
    (a.policy !== options.requested.policy ||
      a.prefetch !== options.requested.prefetch ||
      a.vram_budget_bytes !== options.requested.vram_budget_bytes ||
      (options.requested.threads !== 0 && a.threads !== options.requested.threads));
  const apply = async () => {
    setBusy(true);
    await schedulerStore.setOptions(draft);
    setBusy(false);
  };
  return (
    <form class="sched-controls" data-testid="sched-controls" onSubmit={(e) => { e.preventDefault(); void apply(); }}>
      <label>
        <span>Policy</span>
        <select value={draft.policy} data-testid="sched-policy" onChange={(e) => setDraft({ ...draft, policy: (e.target as HTMLSelectElement).value })}>
          {options.policies.map((p) => <option key={p} value={p}>{p}</option>)}
        </select>
      </label>
      <label>
        <span>VRAM budget (GiB)</span>
        <input type="number" min="0" step="0.5" placeholder="auto" data-testid="sched-budget"
          value={draft.vram_budget_bytes == null ? "" : +(draft.vram_budget_bytes / GIB).toFixed(2)}
          onInput={(e) => {
            const v = (e.target as HTMLInputElement).value;
            setDraft({ ...draft, vram_budget_bytes: v === "" ? null : Math.max(0, Math.round(parseFloat(v) * GIB)) });
          }} />
      </label>
      <label>
        <span>CPU threads</span>
        <input type="number" min="0" max="1024" step="1" placeholder="auto" data-testid="sched-threads"
          value={draft.threads === 0 ? "" : draft.threads}
          onInput={(e) => {
            const v = parseInt((e.target as HTMLInputElement).value, 10);
            setDraft({ ...draft, threads: Number.isFinite(v) && v > 0 ? v : 0 });
          }} />
      </label>
      <label class="sched-check">
        <input type="checkbox" checked={draft.prefetch} data-testid="sched-prefetch"
          onChange={(e) => setDraft({ ...draft, prefetch: (e.target as HTMLInputElement).checked })} />
        <span>Prefetch next-layer experts</span>
      </label>
      <div class="sched-controls-foot">
        <button class="btn sm primary" type="submit" disabled={busy} data-testid="sched-apply">Apply</button>
        <span class="small muted" data-testid="sched-in-force">
          {a ? <>In force: <b>{a.policy}</b> · {a.threads} threads · prefetch {a.prefetch ? "on" : "off"}
            {options.gpu == null ? " · no GPU, budget has no effect" : a.vram_budget_bytes != null ? ` · ${(a.vram_budget_bytes / GIB).toFixed(1)} GiB` : ""}</> : null}
          {pending && <span class="sched-chip">applies at the next generation</span>}
        </span>
      </div>
    </form>
  );
}
