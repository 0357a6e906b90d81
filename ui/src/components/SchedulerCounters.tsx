// Counters with sparklines over the recent steps (re-rendered at the store's UI tick).
import { series, type PanelModel, type SeriesKey } from "../lib/schedModel";

export function Sparkline({ values, max, color, testid }: { values: number[]; max?: number; color: string; testid?: string }) {
  const w = 100;
  const h = 26;
  if (values.length < 2) return <svg class="sched-spark" viewBox={`0 0 ${w} ${h}`} preserveAspectRatio="none" data-testid={testid} />;
  const top = Math.max(max ?? 0, ...values, 1e-12);
  const pts = values.map((v, i) => `${((i / (values.length - 1)) * w).toFixed(1)},${(h - 2 - (v / top) * (h - 4)).toFixed(1)}`);
  return (
    <svg class="sched-spark" viewBox={`0 0 ${w} ${h}`} preserveAspectRatio="none" data-testid={testid}>
      <polygon points={`0,${h} ${pts.join(" ")} ${w},${h}`} fill={color} opacity="0.14" />
      <polyline points={pts.join(" ")} fill="none" stroke={color} stroke-width="1.6" vector-effect="non-scaling-stroke" />
    </svg>
  );
}

const pct = (x: number) => `${(x * 100).toFixed(x < 0.1 && x > 0 ? 1 : 0)}%`;

function fmtBytes(b: number): string {
  if (b >= 1 << 30) return `${(b / (1 << 30)).toFixed(1)} GiB`;
  if (b >= 1 << 20) return `${(b / (1 << 20)).toFixed(0)} MiB`;
  return `${(b / 1024).toFixed(0)} KiB`;
}

interface Tile {
  key: SeriesKey | "vram";
  label: string;
  value: string;
  raw: number;
  sub: string;
  color: string;
  values: number[];
  max?: number;
}

/** Sparklines cover the last `windowSteps` steps (the panel's chart window). */
export function SchedulerCounters({ panel, windowSteps }: { panel: PanelModel; windowSteps?: number }) {
  const c = panel.counters;
  const snap = panel.snapshot;
  const noGpu = snap ? snap.gpu == null : true;
  const capacity = snap ? snap.cache_slots * snap.expert_bytes : 0;
  const h = windowSteps ? panel.history.slice(-windowSteps) : panel.history;
  const tiles: Tile[] = [
    { key: "tok_s", label: "tokens / s", value: c ? c.tok_s.toFixed(c.tok_s >= 100 ? 0 : 1) : "—", raw: c?.tok_s ?? 0,
      sub: c ? `last ${c.window_steps} steps` : "waiting for tokens", color: "#9a82ff", values: series(h, "tok_s") },
    { key: "hit_rate", label: "cache hit rate", value: c ? pct(c.hit_rate) : "—", raw: c?.hit_rate ?? 0,
      sub: c ? (c.cpu_share >= 1 ? "all experts on the CPU" : `${pct(c.cpu_share)} on the CPU`) : "", color: "#3ecf8e", values: series(h, "hit_rate"), max: 1 },
    { key: "pcie_gbps", label: "PCIe", value: c ? `${c.pcie_gbps.toFixed(2)} GB/s` : "—", raw: c?.pcie_gbps ?? 0,
      sub: noGpu ? "none without a GPU" : "expert copies to VRAM", color: "#f5b84a", values: series(h, "pcie_gbps") },
    { key: "vram", label: "VRAM cache", value: snap ? fmtBytes(snap.cache_bytes_used) : "—", raw: snap?.cache_bytes_used ?? 0,
      sub: noGpu ? "empty: no GPU" : `${snap?.cache_resident ?? 0} / ${snap?.cache_slots ?? 0} slots · ${fmtBytes(capacity)}`,
      color: "#26a0d0", values: panel.vram, max: capacity || undefined },
    { key: "cpu_util", label: "CPU / GPU busy", value: c ? `${pct(c.cpu_util)} / ${noGpu ? "—" : pct(c.gpu_util)}` : "—", raw: c?.cpu_util ?? 0,
      sub: "expert work ÷ step time", color: "#a78bfa", values: series(h, "cpu_util"), max: 1 },
    { key: "cost_error", label: "cost-model error", value: c?.cost_error != null ? pct(c.cost_error) : "—", raw: c?.cost_error ?? 0,
      sub: "predicted vs measured, median", color: "#ff8f8f", values: series(h, "cost_error") },
  ];
  return (
    <div class="sched-counters" data-testid="sched-counters" data-steps={panel.steps} data-window={h.length}>
      {tiles.map((t) => (
        <div class="sched-tile" key={t.key} data-testid={`sched-counter-${t.key}`} data-value={t.raw}>
          <div class="sched-tile-label">{t.label}</div>
          <div class="sched-tile-value">{t.value}</div>
          <Sparkline values={t.values} max={t.max} color={t.color} />
          <div class="sched-tile-sub">{t.sub}</div>
        </div>
      ))}
    </div>
  );
}
