// The cache map: layers (rows) × experts (columns) on a canvas, redrawn by
// requestAnimationFrame only while something changes or fades. One pixel per cell is
// written into an ImageData and scaled up (no per-cell draw calls), so a 48 × 128 map
// costs the same as a 4 × 16 one.
import { useEffect, useState } from "preact/hooks";
import { cellRgb, MARK_MS, type CellInput, type Rgb } from "../lib/schedColors";
import { cellAt, gridLayout, panelCost, type ExpertInfo, type PanelModel } from "../lib/schedModel";
import { fitCanvas, useCanvas } from "../lib/useCanvas";
import { RES_ARRIVED, RES_EVICTED, RES_RESIDENT } from "../services/schedTypes";

/** What the map overlays on residency and selections (the panel's view settings). */
export interface GridView {
  /** Use-frequency heat under non-resident experts. */
  heat: boolean;
  /** Flash experts copied in or evicted. */
  marks: boolean;
}

const ALL_ON: GridView = { heat: true, marks: true };

const RES_NAME: Record<number, string> = {
  0: "not in VRAM",
  [RES_RESIDENT]: "resident in VRAM",
  [RES_ARRIVED]: "copied in during the last step",
  [RES_EVICTED]: "evicted during the last step",
};
const PLACE_NAME = ["GPU (cache hit)", "GPU after a fetch", "CPU"];

export function SchedulerGrid({ panel, view = ALL_ON }: { panel: PanelModel; view?: GridView }) {
  const { wrap, canvas, width } = useCanvas();
  const [hover, setHover] = useState<{ x: number; y: number; info: ExpertInfo } | null>(null);
  const { heat, marks } = view;

  useEffect(() => {
    const c = canvas.current;
    if (!c || width <= 0) return;
    let raf = 0;
    let drawnVersion = -1;
    let drawnWidth = -1;
    let img: ImageData | null = null;
    const small = document.createElement("canvas");
    const cell: CellInput = { residency: 0, heat: 0, place: -1, selectedAgo: Infinity, evictedAgo: Infinity, arrivedAgo: Infinity };
    const rgb: Rgb = [0, 0, 0];
    // The border colour is read once (reading styles every frame forces a style pass
    // while the chat is streaming text).
    const border = getComputedStyle(c).getPropertyValue("--panel").trim() || "#151923";
    let published = 0;
    const draw = () => {
      raf = requestAnimationFrame(draw);
      const now = performance.now();
      // Only eviction/arrival marks fade with time; selections fade by tokens.
      const fading = marks && panel.marking(now, MARK_MS);
      if (panel.version === drawnVersion && width === drawnWidth && !fading) return;
      drawnVersion = panel.version;
      const t0 = performance.now();
      drawnWidth = width;
      const g = panel.grid;
      const { cellW, cellH, height, gap } = gridLayout(width, g.nLayers, g.nExperts);
      const ctx = fitCanvas(c, width, height);
      if (!ctx || g.nLayers === 0) return;
      if (!img || img.width !== g.nExperts || img.height !== g.nLayers) {
        small.width = g.nExperts;
        small.height = g.nLayers;
        img = new ImageData(g.nExperts, g.nLayers);
      }
      const d = img.data;
      let glowing = 0;
      for (let i = 0; i < g.residency.length; i++) {
        const r = g.residency[i];
        // Without marks an expert that just arrived reads as resident.
        cell.residency = !marks && r === RES_ARRIVED ? RES_RESIDENT : r;
        cell.heat = heat ? g.heat[i] : 0;
        cell.place = g.place[i];
        cell.selectedAgo = panel.lastStep - g.selectedStep[i];
        cell.evictedAgo = marks ? now - g.evictedAt[i] : Infinity;
        cell.arrivedAgo = marks ? now - g.arrivedAt[i] : Infinity;
        if (cell.selectedAgo === 0) glowing++;
        cellRgb(cell, rgb);
        d[i * 4] = rgb[0];
        d[i * 4 + 1] = rgb[1];
        d[i * 4 + 2] = rgb[2];
        d[i * 4 + 3] = 255;
      }
      small.getContext("2d")?.putImageData(img, 0, 0);
      ctx.imageSmoothingEnabled = false;
      ctx.clearRect(0, 0, width, height);
      ctx.drawImage(small, 0, 0, g.nExperts * cellW, g.nLayers * cellH);
      if (gap > 0) {
        // Cell borders in the panel colour make large cells read as tiles.
        ctx.fillStyle = border;
        for (let e = 1; e < g.nExperts; e++) ctx.fillRect(e * cellW - gap / 2, 0, gap, height);
        if (cellH >= 7) for (let l = 1; l < g.nLayers; l++) ctx.fillRect(0, l * cellH - gap / 2, width, gap);
      }
      const cost = panelCost();
      cost.drawMs += performance.now() - t0;
      cost.draws++;
      // For tests: attributes at most 4 times a second (each write is a DOM mutation).
      if (now - published > 250) {
        published = now;
        c.dataset.version = String(panel.version);
        c.dataset.glowing = String(glowing);
      }
    };
    raf = requestAnimationFrame(draw);
    return () => cancelAnimationFrame(raf);
  }, [panel, width, heat, marks]);

  const onMove = (ev: MouseEvent) => {
    const c = canvas.current;
    if (!c) return;
    const r = c.getBoundingClientRect();
    const x = ev.clientX - r.left;
    const y = ev.clientY - r.top;
    const at = cellAt(x, y, r.width, panel.grid.nLayers, panel.grid.nExperts);
    const info = at ? panel.expert(at.layer, at.expert) : null;
    setHover(info ? { x, y, info } : null);
  };

  const h = hover?.info;
  return (
    <div class="sched-grid-wrap" ref={wrap}>
      <canvas ref={canvas} class="sched-grid" data-testid="sched-grid" onMouseMove={onMove} onMouseLeave={() => setHover(null)}
        aria-label={`Cache map: ${panel.grid.nLayers} layers by ${panel.grid.nExperts} experts`} role="img" />
      {h && hover && (
        <div class="sched-tip" data-testid="sched-tip"
          style={{ left: `${Math.min(hover.x + 14, Math.max(0, width - 210))}px`, top: `${hover.y + 14}px` }}>
          <div class="sched-tip-title">Layer {h.layer} · expert {h.expert}</div>
          <dl>
            <dt>uses</dt><dd>{h.uses}</dd>
            <dt>cache hits</dt><dd>{h.hits}{h.uses > 0 ? ` (${Math.round((100 * h.hits) / h.uses)}%)` : ""}</dd>
            <dt>fetched / on CPU</dt><dd>{h.fetches} / {h.cpuRuns}</dd>
            <dt>last use</dt><dd>{h.lastUse < 0 ? "never" : h.stepsAgo === 0 ? "this token" : `${h.stepsAgo} steps ago`}</dd>
            <dt>policy score</dt><dd>{formatScore(h.score)}</dd>
            <dt>VRAM</dt><dd>{RES_NAME[h.residency] ?? "?"}</dd>
            {h.place >= 0 && <><dt>last ran on</dt><dd>{PLACE_NAME[h.place]}</dd></>}
          </dl>
        </div>
      )}
    </div>
  );
}

function formatScore(x: number): string {
  if (!Number.isFinite(x)) return "—";
  if (x === 0) return "0";
  const a = Math.abs(x);
  return a >= 1000 || a < 0.01 ? x.toExponential(2) : x.toFixed(3);
}
