// Timeline of recent tokens. Top: one column per step, its layers stacked bottom-up, each
// segment as tall as the layer's MoE time (measured where timed) and coloured by the side
// on its critical path; the white tick is the cost model's prediction for the step.
// Bottom: the latest step per layer, predicted CPU / GPU / PCIe busy time side by side
// with the measured time as a dot.
import { useEffect } from "preact/hooks";
import { criticalSide, css, mix, PALETTE, sideRgb, type Rgb } from "../lib/schedColors";
import { panelCost, type PanelModel } from "../lib/schedModel";
import { fitCanvas, useCanvas } from "../lib/useCanvas";
import type { StepSummary } from "../services/schedTypes";

const TOP_H = 96;
const BOTTOM_H = 64;
/** Column width bounds (px): columns stretch so that `window` steps fill the width. */
const MIN_COL_W = 3;
const MAX_COL_W = 14;
/** Steps shown when the panel passes no window. */
const DEFAULT_WINDOW = 64;

/** Column width and count for `window` steps in `width` px. */
export function timelineColumns(width: number, windowSteps: number): { colW: number; cols: number } {
  const colW = Math.max(MIN_COL_W, Math.min(MAX_COL_W, width / Math.max(1, windowSteps)));
  return { colW, cols: Math.max(1, Math.min(windowSteps, Math.floor(width / colW))) };
}

const layerTime = (l: StepSummary["layers"][number]) => (l.measured >= 0 ? l.measured : l.finish);

export function SchedulerTimeline({ panel, windowSteps = DEFAULT_WINDOW }: { panel: PanelModel; windowSteps?: number }) {
  const { wrap, canvas, width } = useCanvas();

  useEffect(() => {
    const c = canvas.current;
    if (!c || width <= 0) return;
    let raf = 0;
    let drawn = -1;
    let drawnWidth = -1;
    const shade: Rgb = [0, 0, 0];
    let published = 0;
    const draw = () => {
      raf = requestAnimationFrame(draw);
      if (panel.version === drawn && width === drawnWidth) return;
      drawn = panel.version;
      const t0 = performance.now();
      drawnWidth = width;
      const height = TOP_H + 14 + BOTTOM_H;
      const ctx = fitCanvas(c, width, height);
      if (!ctx) return;
      ctx.clearRect(0, 0, width, height);
      const { colW, cols } = timelineColumns(width, windowSteps);
      const steps = panel.history.slice(-cols);
      // Scale: the 90th percentile of the visible steps (measured or predicted) fills
      // 85% of the height, so one long prefill step does not flatten the decode steps;
      // taller columns are clipped.
      const totals = steps
        .flatMap((s) => [s.layers.reduce((a, l) => a + layerTime(l), 0), s.predicted_s])
        .sort((a, b) => a - b);
      const max = Math.max(1e-9, (totals[Math.floor(0.9 * (totals.length - 1))] ?? 0) / 0.85);
      const x0 = width - steps.length * colW;
      steps.forEach((s, k) => {
        const x = x0 + k * colW;
        let y = TOP_H;
        s.layers.forEach((l, li) => {
          const h = Math.min((layerTime(l) / max) * (TOP_H - 4), y);
          const base = sideRgb(criticalSide(l.cpu, l.gpu, l.pcie));
          // Alternate shades so layer boundaries stay visible.
          mix(base, PALETTE.empty, li % 2 ? 0.28 : 0, shade);
          ctx.fillStyle = css(shade);
          ctx.fillRect(x, y - h, colW - 1, h);
          y -= h;
        });
      });
      // The cost model's prediction of each step: a line over the columns.
      ctx.strokeStyle = css(PALETTE.predicted, 0.85);
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      steps.forEach((s, k) => {
        const px = x0 + k * colW + (colW - 1) / 2;
        const py = Math.max(1, TOP_H - (s.predicted_s / max) * (TOP_H - 4));
        if (k === 0) ctx.moveTo(px, py);
        else ctx.lineTo(px, py);
      });
      ctx.stroke();
      ctx.fillStyle = css(PALETTE.predicted, 0.6);
      ctx.font = "10px system-ui, sans-serif";
      ctx.fillText(`${(max * 1e3).toFixed(max < 1e-3 ? 2 : 1)} ms`, 2, 10);
      ctx.fillText("per layer, latest token", 2, TOP_H + 11);
      // Latest step, per layer.
      const last = panel.history[panel.history.length - 1];
      const top = TOP_H + 14;
      ctx.fillStyle = "rgba(139,147,167,0.25)";
      ctx.fillRect(0, top + BOTTOM_H - 1, width, 1);
      if (last && last.layers.length > 0) {
        const n = last.layers.length;
        const w = width / n;
        let lmax = 1e-9;
        for (const l of last.layers) lmax = Math.max(lmax, l.cpu, l.gpu, l.pcie, l.measured);
        last.layers.forEach((l, i) => {
          const bw = Math.max(1, (w - 2) / 3);
          const bars: [number, Rgb][] = [[l.cpu, PALETTE.cpu], [l.gpu, PALETTE.gpuHit], [l.pcie, PALETTE.gpuFetch]];
          bars.forEach(([v, col], j) => {
            const h = (v / lmax) * (BOTTOM_H - 6);
            ctx.fillStyle = css(col);
            ctx.fillRect(i * w + 1 + j * bw, top + BOTTOM_H - 1 - h, Math.max(1, bw - (w > 12 ? 1 : 0)), h);
          });
          if (l.measured >= 0) {
            const my = top + BOTTOM_H - 1 - (l.measured / lmax) * (BOTTOM_H - 6);
            ctx.fillStyle = css(PALETTE.predicted);
            ctx.beginPath();
            ctx.arc(i * w + w / 2, my, Math.min(3, Math.max(1.5, w / 5)), 0, Math.PI * 2);
            ctx.fill();
          }
        });
      }
      const cost = panelCost();
      cost.drawMs += performance.now() - t0;
      cost.draws++;
      if (performance.now() - published > 250) {
        published = performance.now();
        c.dataset.steps = String(steps.length);
        c.dataset.version = String(panel.version);
      }
    };
    raf = requestAnimationFrame(draw);
    return () => cancelAnimationFrame(raf);
  }, [panel, width, windowSteps]);

  return (
    <div class="sched-timeline-wrap" ref={wrap}>
      <canvas ref={canvas} class="sched-timeline" data-testid="sched-timeline" role="img"
        aria-label="Recent tokens: per-layer time by critical side, predicted against measured" />
      <div class="sched-timeline-labels">
        <span>recent tokens → now · bars: measured MoE time, layers stacked · line: predicted</span>
        <span>latest token per layer: bars = predicted CPU / GPU / PCIe · dot = measured</span>
      </div>
    </div>
  );
}
