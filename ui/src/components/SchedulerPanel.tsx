// The live scheduler panel: cache map, timeline, counters, controls and what-if. Which
// sections are open, the chart window, overlays and palette are view settings saved by
// the back end (stores/panelSettings.ts).
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { PALETTE, css, setLightTheme, setPalette } from "../lib/schedColors";
import type { PanelPalette, PanelSections } from "../services/schedTypes";
import { panelSettingsStore } from "../stores/panelSettings";
import { schedulerStore } from "../stores/scheduler";
import { useStore } from "../stores/store";
import { SchedulerControls } from "./SchedulerControls";
import { SchedulerCounters } from "./SchedulerCounters";
import { SchedulerGrid } from "./SchedulerGrid";
import { SchedulerTimeline } from "./SchedulerTimeline";
import { SchedulerWhatIf } from "./SchedulerWhatIf";

/** Chart windows offered (steps); the back end accepts 8..=160. */
export const WINDOW_CHOICES = [16, 32, 64, 128, 160];

const legend = (): [string, string][] => [
  ["GPU hit", css(PALETTE.gpuHit)],
  ["GPU after fetch", css(PALETTE.gpuFetch)],
  ["CPU", css(PALETTE.cpu)],
  ["in VRAM", css(PALETTE.resident)],
  ["copied in", css(PALETTE.arrived)],
  ["evicted", css(PALETTE.evicted)],
];

/** A section whose title folds it; the open state is a saved view setting. */
function Section({ id, title, extra, plain, children }: {
  id: keyof PanelSections; title: string; extra?: ComponentChildren; plain?: boolean; children: ComponentChildren;
}) {
  const open = useStore(panelSettingsStore).settings.sections[id];
  return (
    <section class={`sched-section ${open ? "" : "folded"} ${plain ? "plain" : ""}`} data-testid={`sched-section-${id}`} data-open={open ? "true" : "false"}>
      <div class="sched-section-head">
        <button type="button" class="sched-fold" aria-expanded={open} data-testid={`sched-fold-${id}`}
          onClick={() => panelSettingsStore.toggleSection(id)}>
          <span class="sched-fold-mark" aria-hidden="true">{open ? "▾" : "▸"}</span>
          <h4>{title}</h4>
        </button>
        {open && extra}
      </div>
      {open && children}
    </section>
  );
}

/** Chart window, overlays and palette. */
function ViewOptions() {
  const v = useStore(panelSettingsStore).settings;
  const up = panelSettingsStore.update.bind(panelSettingsStore);
  return (
    <div class="sched-view small" data-testid="sched-view">
      <label>
        Charts: last
        <select value={String(v.window_steps)} data-testid="sched-window"
          onChange={(e) => up({ window_steps: Number((e.target as HTMLSelectElement).value) })}>
          {[...new Set([...WINDOW_CHOICES, v.window_steps])].sort((a, b) => a - b).map((n) => <option key={n} value={String(n)}>{n}</option>)}
        </select>
        tokens
      </label>
      <label>
        <input type="checkbox" checked={v.heat_overlay} data-testid="sched-heat"
          onChange={(e) => up({ heat_overlay: (e.target as HTMLInputElement).checked })} />
        use heat map
      </label>
      <label>
        <input type="checkbox" checked={v.cache_marks} data-testid="sched-marks"
          onChange={(e) => up({ cache_marks: (e.target as HTMLInputElement).checked })} />
        copy / evict flashes
      </label>
      <label>
        Colours
        <select value={v.palette} data-testid="sched-palette"
          onChange={(e) => up({ palette: (e.target as HTMLSelectElement).value as PanelPalette })}>
          <option value="default">default</option>
          <option value="colorblind">colour-blind safe</option>
        </select>
      </label>
    </div>
  );
}

export function SchedulerPanel({ docked }: { docked: boolean }) {
  const s = useStore(schedulerStore);
  const view = useStore(panelSettingsStore);
  const vs = view.settings;
  const [, setClock] = useState(0);
  useEffect(() => {
    setPalette(vs.palette);
    schedulerStore.panel.version++;
  }, [vs.palette]);
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
      {view.error && <div class="sched-error small" role="alert" data-testid="sched-view-error">{view.error}</div>}
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
            <ViewOptions />
            <Section id="counters" title="Counters" plain>
              <SchedulerCounters panel={p} windowSteps={vs.window_steps} />
            </Section>
            <Section id="cache_map" title="Cache map"
              extra={<span class="small muted">layers ↓ × experts → · step {p.lastStep >= 0 ? p.lastStep : "—"}</span>}>
              <SchedulerGrid panel={p} view={{ heat: vs.heat_overlay, marks: vs.cache_marks }} />
              <div class="sched-legend">
                {legend().map(([label, color]) => <span key={label}><i style={{ background: color }} />{label}</span>)}
                {vs.heat_overlay && <span><i class="heat" />use frequency</span>}
              </div>
            </Section>
            <Section id="timeline" title="Timeline"
              extra={<span class="sched-legend inline">
                <span><i style={{ background: css(PALETTE.cpu) }} />CPU</span>
                <span><i style={{ background: css(PALETTE.gpuHit) }} />GPU</span>
                <span><i style={{ background: css(PALETTE.gpuFetch) }} />PCIe</span>
              </span>}>
              <SchedulerTimeline panel={p} windowSteps={vs.window_steps} />
            </Section>
          </div>
          <div class="sched-side">
            <Section id="controls" title="Controls">
              {s.notice && <div class="small sched-notice" data-testid="sched-notice">{s.notice}</div>}
              <SchedulerControls options={s.options} />
            </Section>
            <Section id="what_if" title="What if">
              <SchedulerWhatIf report={s.whatIf} busy={s.whatIfBusy} scope={s.whatIfScope} />
            </Section>
          </div>
        </div>
      )}
    </aside>
  );
}
