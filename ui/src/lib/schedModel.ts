// The panel's client-side aggregation: what the canvases draw, updated in place from the
// back end's coalesced messages (no re-render per message). Pure apart from the clock
// passed in, so tests drive it with plain objects.
import type { Counters, SchedFrame, SchedMessage, SchedModel, SchedSnapshot, StepSummary } from "../services/schedTypes";
import { RES_ARRIVED, RES_EVICTED } from "../services/schedTypes";

/** Steps kept for the timeline and the sparklines ("the last N tokens"). */
export const HISTORY_STEPS = 160;
/** Snapshots of VRAM use kept for its sparkline. */
export const VRAM_POINTS = 120;

/** Per-cell state of the cache map, flat-indexed `layer * n_experts + expert`. */
export interface GridState {
  nLayers: number;
  nExperts: number;
  residency: Uint8Array;
  /** Usage heat 0..1 (uses ÷ the layer's most used). */
  heat: Float32Array;
  /** Placement of the last selection, -1 never. */
  place: Int8Array;
  /** Step of the last selection (-Infinity: never). */
  selectedStep: Float64Array;
  /** Clock (ms) of the last eviction, arrival; -Infinity never. */
  evictedAt: Float64Array;
  arrivedAt: Float64Array;
}

export function emptyGrid(nLayers: number, nExperts: number): GridState {
  const n = nLayers * nExperts;
  return {
    nLayers,
    nExperts,
    residency: new Uint8Array(n),
    heat: new Float32Array(n),
    place: new Int8Array(n).fill(-1),
    selectedStep: new Float64Array(n).fill(-Infinity),
    evictedAt: new Float64Array(n).fill(-Infinity),
    arrivedAt: new Float64Array(n).fill(-Infinity),
  };
}

/** Heat per expert: uses ÷ the most used expert of the same layer. */
export function heatFromUses(uses: ArrayLike<number>, nLayers: number, nExperts: number, out: Float32Array): void {
  for (let l = 0; l < nLayers; l++) {
    let max = 0;
    for (let e = 0; e < nExperts; e++) max = Math.max(max, uses[l * nExperts + e] ?? 0);
    for (let e = 0; e < nExperts; e++) {
      const i = l * nExperts + e;
      out[i] = max > 0 ? (uses[i] ?? 0) / max : 0;
    }
  }
}

/** Per-step series for the sparklines. */
export type SeriesKey = "tok_s" | "hit_rate" | "pcie_gbps" | "cpu_util" | "gpu_util" | "cost_error";

export function stepValue(s: StepSummary, key: SeriesKey): number | null {
  const wall = s.wall_s > 0 ? s.wall_s : 0;
  switch (key) {
    case "tok_s":
      return wall > 0 ? s.n_tokens / wall : null;
    case "hit_rate":
      return s.accesses > 0 ? s.hits / s.accesses : null;
    case "pcie_gbps":
      return wall > 0 ? s.pcie_bytes / wall / 1e9 : null;
    case "cpu_util": {
      if (wall <= 0) return null;
      const busy = s.layers.reduce((a, l) => a + (l.measured >= 0 ? l.measured : l.cpu), 0);
      return Math.min(1, busy / wall);
    }
    case "gpu_util":
      return wall > 0 ? Math.min(1, s.layers.reduce((a, l) => a + l.gpu, 0) / wall) : null;
    case "cost_error": {
      const errs = s.layers.filter((l) => l.measured > 0).map((l) => Math.abs(l.finish - l.measured) / l.measured);
      if (errs.length === 0) return null;
      errs.sort((a, b) => a - b);
      const m = errs.length >> 1;
      return errs.length % 2 ? errs[m] : (errs[m - 1] + errs[m]) / 2;
    }
  }
}

export function series(history: StepSummary[], key: SeriesKey): number[] {
  const out: number[] = [];
  for (const s of history) {
    const v = stepValue(s, key);
    if (v != null && Number.isFinite(v)) out.push(v);
  }
  return out;
}

/** The panel's live state. `version` changes whenever something drawable changed. */
export class PanelModel {
  model: SchedModel | null = null;
  grid: GridState = emptyGrid(0, 0);
  snapshot: SchedSnapshot | null = null;
  counters: Counters | null = null;
  history: StepSummary[] = [];
  vram: number[] = [];
  frames = 0;
  steps = 0;
  lagged = 0;
  lastStep = -1;
  /** Clock (ms) of the last frame. */
  lastFrameAt = -Infinity;
  /** Clock (ms) of the last eviction or arrival. */
  lastMarkAt = -Infinity;
  version = 0;

  apply(m: SchedMessage, now: number): void {
    if (m.kind === "model") this.setModel(m.model);
    else if (m.kind === "frame") this.applyFrame(m, now);
    else this.applySnapshot(m);
    this.version++;
  }

  setModel(model: SchedModel | null): void {
    this.model = model;
    this.grid = model ? emptyGrid(model.n_layers, model.n_experts) : emptyGrid(0, 0);
    this.snapshot = null;
    this.counters = null;
    this.history = [];
    this.vram = [];
    this.frames = this.steps = this.lagged = 0;
    this.lastStep = -1;
  }

  private inGrid(l: number, e: number): number {
    const g = this.grid;
    return l >= 0 && l < g.nLayers && e >= 0 && e < g.nExperts ? l * g.nExperts + e : -1;
  }

  applyFrame(f: SchedFrame, now: number): void {
    this.frames++;
    this.steps += f.steps;
    this.lagged += f.lagged;
    this.lastStep = f.last_step;
    this.lastFrameAt = now;
    this.counters = f.counters;
    const g = this.grid;
    f.current.forEach((sel, l) => {
      for (const [e, p] of sel) {
        const i = this.inGrid(l, e);
        if (i < 0) continue;
        g.place[i] = p;
        g.selectedStep[i] = f.last_step;
      }
    });
    if (f.evicted.length > 0 || f.loaded.length > 0) this.lastMarkAt = now;
    for (const [l, e] of f.evicted) {
      const i = this.inGrid(l, e);
      if (i >= 0) {
        g.evictedAt[i] = now;
        g.residency[i] = RES_EVICTED;
      }
    }
    for (const [l, e] of f.loaded) {
      const i = this.inGrid(l, e);
      if (i >= 0) {
        g.arrivedAt[i] = now;
        g.residency[i] = RES_ARRIVED;
      }
    }
    for (const s of f.timeline) this.history.push(s);
    if (this.history.length > HISTORY_STEPS) this.history.splice(0, this.history.length - HISTORY_STEPS);
  }

  applySnapshot(s: SchedSnapshot): void {
    const g = this.grid;
    if (s.n_layers !== g.nLayers || s.n_experts !== g.nExperts) {
      // A snapshot of another model (a load raced the subscription): start over from it.
      this.grid = emptyGrid(s.n_layers, s.n_experts);
    }
    this.snapshot = s;
    this.grid.residency.set(s.residency.slice(0, this.grid.residency.length));
    heatFromUses(s.stats.uses, s.n_layers, s.n_experts, this.grid.heat);
    this.vram.push(s.cache_bytes_used);
    if (this.vram.length > VRAM_POINTS) this.vram.splice(0, this.vram.length - VRAM_POINTS);
  }

  /** Whether anything is still animating at `now` (glows and marks fade out). */
  animating(now: number, fadeMs: number): boolean {
    return now - this.lastFrameAt < fadeMs;
  }

  /** Whether an eviction or arrival mark is still fading at `now`. */
  marking(now: number, fadeMs: number): boolean {
    return now - this.lastMarkAt < fadeMs;
  }

  /** Statistics of one expert for the tooltip (null outside the grid). */
  expert(layer: number, expert: number): ExpertInfo | null {
    const i = this.inGrid(layer, expert);
    if (i < 0) return null;
    const s = this.snapshot;
    const g = this.grid;
    const lastUse = s?.stats.last_use[i] ?? -1;
    return {
      layer,
      expert,
      uses: s?.stats.uses[i] ?? 0,
      hits: s?.stats.hits[i] ?? 0,
      fetches: s?.stats.fetches[i] ?? 0,
      cpuRuns: s?.stats.cpu_runs[i] ?? 0,
      lastUse,
      stepsAgo: lastUse >= 0 && this.lastStep >= 0 ? Math.max(0, this.lastStep - lastUse) : null,
      score: s?.score[i] ?? 0,
      residency: g.residency[i],
      place: g.place[i],
      inCurrent: this.history.length > 0 && lastUse === this.lastStep,
    };
  }
}

export interface ExpertInfo {
  layer: number;
  expert: number;
  uses: number;
  hits: number;
  fetches: number;
  cpuRuns: number;
  lastUse: number;
  stepsAgo: number | null;
  score: number;
  residency: number;
  place: number;
  inCurrent: boolean;
}

/** Grid geometry for a canvas `width` px wide: cell size and canvas height. */
export function gridLayout(width: number, nLayers: number, nExperts: number): { cellW: number; cellH: number; height: number; gap: number } {
  if (nExperts <= 0 || nLayers <= 0) return { cellW: 0, cellH: 0, height: 0, gap: 0 };
  const cellW = Math.max(1, width / nExperts);
  const cellH = Math.max(3, Math.min(cellW, 22));
  const gap = cellW >= 7 ? 1 : 0;
  return { cellW, cellH, height: Math.ceil(cellH * nLayers), gap };
}

/** The cell under a point of the canvas (null outside). */
export function cellAt(x: number, y: number, width: number, nLayers: number, nExperts: number): { layer: number; expert: number } | null {
  const { cellW, cellH } = gridLayout(width, nLayers, nExperts);
  if (cellW <= 0 || x < 0 || y < 0) return null;
  const expert = Math.floor(x / cellW);
  const layer = Math.floor(y / cellH);
  if (expert >= nExperts || layer >= nLayers) return null;
  return { layer, expert };
}

/** Time the panel spends in its own code (drawing, message handling), for the benchmark:
 * `window.__hmoeSchedCost` = { drawMs, draws, msgMs, msgs }. */
export interface PanelCost {
  drawMs: number;
  draws: number;
  msgMs: number;
  msgs: number;
}

export function panelCost(): PanelCost {
  const w = globalThis as unknown as { __hmoeSchedCost?: PanelCost };
  if (!w.__hmoeSchedCost) w.__hmoeSchedCost = { drawMs: 0, draws: 0, msgMs: 0, msgs: 0 };
  return w.__hmoeSchedCost;
}
