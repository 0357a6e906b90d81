// "What if": the conversation's routing trace replayed through the simulator under every
// policy and cache size; hit rate and predicted tokens/s against the policy in use.
import { useRef } from "preact/hooks";
import { whatIfChart, type ChartSeries } from "../lib/schedChart";
import type { WhatIfReport } from "../services/schedTypes";
import { schedulerStore } from "../stores/scheduler";

function Chart({ title, series, yMax, yFmt, xs }: { title: string; series: ChartSeries[]; yMax: number; yFmt: (v: number) => string; xs: string[] }) {
  const W = 300;
  const H = 180;
  const m = { l: 44, r: 10, t: 24, b: 26 };
  const iw = W - m.l - m.r;
  const ih = H - m.t - m.b;
  const x = (i: number) => m.l + (xs.length > 1 ? (i / (xs.length - 1)) * iw : iw / 2);
  const y = (v: number) => m.t + ih - (Math.min(v, yMax) / (yMax || 1)) * ih;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => f * yMax);
  return (
    <g>
      <text x={m.l} y={14} fill="#e6e8ef" font-size="13" font-weight="600">{title}</text>
      {ticks.map((t) => (
        <g key={t}>
          <line x1={m.l} x2={W - m.r} y1={y(t)} y2={y(t)} stroke="#262c3d" stroke-width="1" />
          <text x={m.l - 5} y={y(t) + 3.5} fill="#8b93a7" font-size="11" text-anchor="end">{yFmt(t)}</text>
        </g>
      ))}
      {xs.map((s, i) => <text key={s} x={x(i)} y={H - 8} fill="#8b93a7" font-size="11" text-anchor="middle">{s}</text>)}
      {series.map((s) => (
        <g key={s.policy} opacity={s.current ? 1 : 0.85}>
          <polyline fill="none" stroke={s.color} stroke-width={s.current ? 3 : 1.5} stroke-dasharray={s.dashed ? "4 3" : undefined}
            points={s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ")} />
          {s.values.map((v, i) => <circle key={i} cx={x(i)} cy={y(v)} r={s.current ? 3 : 1.8} fill={s.color} />)}
        </g>
      ))}
    </g>
  );
}

export function WhatIfPlot({ report }: { report: WhatIfReport }) {
  const c = whatIfChart(report);
  const W = 300;
  return (
    <svg xmlns="http://www.w3.org/2000/svg" class="sched-whatif-svg" viewBox={`0 0 ${2 * W + 20} ${180 + 22 + 20 * Math.ceil(c.hit.length / 4)}`}
      data-testid="sched-whatif-plot" role="img" aria-label="What-if replay: hit rate and predicted tokens per second by policy and cache size">
      <rect width="100%" height="100%" fill="#151923" rx="8" />
      <Chart title="Cache hit rate" series={c.hit} yMax={1} yFmt={(v) => `${Math.round(v * 100)}%`} xs={c.sizes} />
      <g transform={`translate(${W + 20},0)`}>
        <Chart title="Predicted tokens / s" series={c.tok} yMax={c.tokMax} yFmt={(v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1))} xs={c.sizes} />
      </g>
      {c.hit.map((s, i) => (
        <g key={s.policy} transform={`translate(${14 + (i % 4) * 152},${180 + 14 + Math.floor(i / 4) * 20})`}>
          <line x1="0" x2="18" y1="0" y2="0" stroke={s.color} stroke-width={s.current ? 3 : 1.8} stroke-dasharray={s.dashed ? "4 3" : undefined} />
          <text x="24" y="3.5" fill={s.current ? "#ffffff" : "#c5cad8"} font-size="12" font-weight={s.current ? "700" : "400"}>
            {s.policy}{s.current ? " (in use)" : ""}
          </text>
        </g>
      ))}
    </svg>
  );
}

export function SchedulerWhatIf({ report, busy, scope }: { report: WhatIfReport | null; busy: boolean; scope: string }) {
  const plot = useRef<HTMLDivElement>(null);
  const exportPlot = () => {
    const svg = plot.current?.querySelector("svg");
    if (svg) void schedulerStore.exportPlot(new XMLSerializer().serializeToString(svg));
  };
  return (
    <div class="sched-whatif" data-testid="sched-whatif">
      <div class="row between gap">
        <p class="small muted sched-whatif-intro">
          Replays this conversation's routing through the simulator under every policy and cache size (share of all experts),
          costed on the GPU machine's profile (H100 + 16-core Xeon).
        </p>
        <button class="btn sm primary" disabled={busy} onClick={() => void schedulerStore.runWhatIf()} data-testid="sched-whatif-run">
          {busy ? "Replaying…" : report ? "Replay again" : "Replay"}
        </button>
      </div>
      {report && (
        <>
          <div ref={plot} class="sched-whatif-plot"><WhatIfPlot report={report} /></div>
          <div class="row between small muted">
            <span data-testid="sched-whatif-summary">
              {report.steps} steps ({report.tokens} tokens) of {scope}, after {report.warmup_steps} warm-up steps · profile {report.profile}
            </span>
          </div>
        </>
      )}
      <div class="row gap sched-exports">
        <button class="btn sm" onClick={() => void schedulerStore.exportTrace()} data-testid="sched-export-trace">Export trace</button>
        <button class="btn sm" disabled={!report} onClick={exportPlot} data-testid="sched-export-plot">Export plot (SVG)</button>
      </div>
    </div>
  );
}
