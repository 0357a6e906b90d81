// The live scheduler panel: cache map, timeline, counters, controls and what-if.
import { useEffect, useState } from "preact/hooks";
import { PALETTE, css, setLightTheme } from "../lib/schedColors";
import { schedulerStore } from "../stores/scheduler";
import { useStore } from "../stores/store";
import { SchedulerControls } from "./SchedulerControls";
import { SchedulerCounters } from "./SchedulerCounters";
import { SchedulerGrid } from "./SchedulerGrid";
import { SchedulerTimeline } from "./SchedulerTimeline";
import { SchedulerWhatIf } from "./SchedulerWhatIf";

const LEGEND: [string, string][] = [
  ["GPU hit", css(PALETTE.gpuHit)],
  ["GPU after fetch", css(PALETTE.gpuFetch)],
  ["CPU", css(PALETTE.cpu)],
  ["in VRAM", css(PALETTE.resident)],
  ["copied in", css(PALETTE.arrived)],
  ["evicted", css(PALETTE.evicted)],
];

export function SchedulerPanel({ docked }: { docked: boolean }) {
  const s = useStore(schedulerStore);
  const [, setClock] = useState(0);
  useEffect(() => {
    // Canvas colours follow the page theme (the CSS does the rest).
    const mq = typeof matchMedia === "function" ? matchMedia("(prefers-color-scheme: light)") : null;
    const onTheme = () => {
      setLightTheme(!!mq?.matches);
      schedulerStore.panel.version++;
    };
    onTheme();
    mq?.addEventListener?.("change", onTheme);
    return () => mq?.removeEventListener?.("change", onTheme);
  }, []);
  useEffect(() => {
    void schedulerStore.open();
    // Re-render once a second so "live" turns "idle" when frames stop.
    const t = setInterval(() => setClock((c) => c + 1), 1000);
    return () => {
      clearInterval(t);
      schedulerStore.close();
    };
  }, []);
  const p = schedulerStore.panel;
  const noGpu = p.snapshot ? p.snapshot.gpu == null : (s.options?.gpu ?? null) == null;
  const live = p.lastFrameAt > performance.now() - 1500;
  const m = s.model;
  return (
    <aside class={`scheduler-slot sched-panel ${docked ? "docked" : "full"}`} data-slot="scheduler" aria-label="Scheduler" data-testid="sched-panel">
      <header class="sched-head">
        <div>
          <h3>Scheduler</h3>
          <div class="small muted" data-testid="sched-model">
            {m ? `${m.name} · ${m.n_layers} layers × ${m.n_experts} experts · top-${m.top_k}` : "no model loaded"}
          </div>
        </div>
        <div class="row gap">
          <span class={`sched-pill ${noGpu ? "cpu" : "gpu"}`} data-testid="sched-device">
            {noGpu ? "CPU only" : (p.snapshot?.gpu ?? "GPU")}
          </span>
          <span class={`sched-pill ${live ? "live" : ""}`} data-testid="sched-live">
            <span class={`dot ${live ? "ok" : ""}`} /> {live ? "live" : "idle"}
          </span>
        </div>
      </header>
      {s.error && <div class="sched-error" role="alert">{s.error}</div>}
      {!m ? (
        <p class="muted">Load a model to see where its experts run.</p>
      ) : (
        <div class="sched-body">
          <div class="sched-main">
            {noGpu && (
              <div class="sched-banner" data-testid="sched-nogpu">
                <b>No GPU on this machine.</b> Every expert runs on the CPU and the VRAM cache is empty; the
                map shows which experts each token selects. <i>What if</i> below replays this conversation on a GPU machine.
              </div>
            )}
            <SchedulerCounters panel={p} />
            <section class="sched-section">
              <div class="sched-section-head">
                <h4>Cache map</h4>
                <span class="small muted">layers ↓ × experts → · step {p.lastStep >= 0 ? p.lastStep : "—"}</span>
              </div>
              <SchedulerGrid panel={p} />
              <div class="sched-legend">
                {LEGEND.map(([label, color]) => <span key={label}><i style={{ background: color }} />{label}</span>)}
                <span><i class="heat" />use frequency</span>
              </div>
            </section>
            <section class="sched-section">
              <div class="sched-section-head">
                <h4>Timeline</h4>
                <span class="sched-legend inline">
                  <span><i style={{ background: css(PALETTE.cpu) }} />CPU</span>
                  <span><i style={{ background: css(PALETTE.gpuHit) }} />GPU</span>
                  <span><i style={{ background: css(PALETTE.gpuFetch) }} />PCIe</span>
                </span>
              </div>
              <SchedulerTimeline panel={p} />
            </section>
          </div>
          <div class="sched-side">
            <section class="sched-section">
              <h4>Controls</h4>
              {s.notice && <div class="small sched-notice" data-testid="sched-notice">{s.notice}</div>}
              <SchedulerControls options={s.options} />
            </section>
            <section class="sched-section">
              <h4>What if</h4>
              <SchedulerWhatIf report={s.whatIf} busy={s.whatIfBusy} scope={s.whatIfScope} />
            </section>
          </div>
        </div>
      )}
    </aside>
  );
}
