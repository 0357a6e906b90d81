// Colour mapping of the scheduler panel: cache map cells, timeline segments. Pure, so
// the rules are unit-tested; canvases call these per cell per frame (no allocation in
// `cellRgb`: it writes into a caller's array).

export type Rgb = [number, number, number];

/** Palette (dark theme by default; `setLightTheme` swaps the neutral colours). */
export const PALETTE = {
  empty: [24, 28, 42] as Rgb,
  heatHi: [72, 64, 140] as Rgb,
  resident: [38, 118, 170] as Rgb,
  arrived: [92, 225, 230] as Rgb,
  evicted: [255, 107, 107] as Rgb,
  gpuHit: [62, 207, 142] as Rgb,
  gpuFetch: [245, 184, 74] as Rgb,
  cpu: [167, 139, 250] as Rgb,
  predicted: [230, 232, 239] as Rgb,
};

const DARK = { empty: [24, 28, 42] as Rgb, heatHi: [72, 64, 140] as Rgb, predicted: [230, 232, 239] as Rgb };
const LIGHT = { empty: [232, 235, 244] as Rgb, heatHi: [150, 140, 214] as Rgb, predicted: [27, 31, 42] as Rgb };

/** Neutral colours for a light or dark page (the accents work on both). */
export function setLightTheme(light: boolean): void {
  const t = light ? LIGHT : DARK;
  PALETTE.empty = t.empty;
  PALETTE.heatHi = t.heatHi;
  PALETTE.predicted = t.predicted;
}

type Accents = Pick<typeof PALETTE, "resident" | "arrived" | "evicted" | "gpuHit" | "gpuFetch" | "cpu">;
const ACCENTS: Record<"default" | "colorblind", Accents> = {
  default: {
    resident: [38, 118, 170], arrived: [92, 225, 230], evicted: [255, 107, 107],
    gpuHit: [62, 207, 142], gpuFetch: [245, 184, 74], cpu: [167, 139, 250],
  },
  // Okabe–Ito: placements blue / orange / reddish purple, marks yellow and bluish green;
  // told apart with protanopia and deuteranopia.
  colorblind: {
    resident: [0, 114, 178], arrived: [0, 158, 115], evicted: [240, 228, 66],
    gpuHit: [86, 180, 233], gpuFetch: [230, 159, 0], cpu: [204, 121, 167],
  },
};

/** Accent colours of the map and timeline (the panel's palette setting). */
export function setPalette(name: "default" | "colorblind"): void {
  Object.assign(PALETTE, ACCENTS[name] ?? ACCENTS.default);
}

/** Steps over which a selected expert's glow fades (0 = the current token, full colour). */
export const GLOW_STEPS = 3;
/** How long an eviction or arrival stays marked (ms). */
export const MARK_MS = 900;

export const clamp01 = (x: number) => (x < 0 ? 0 : x > 1 ? 1 : Number.isFinite(x) ? x : 0);

export function mix(a: Rgb, b: Rgb, t: number, out: Rgb = [0, 0, 0]): Rgb {
  const u = clamp01(t);
  out[0] = Math.round(a[0] + (b[0] - a[0]) * u);
  out[1] = Math.round(a[1] + (b[1] - a[1]) * u);
  out[2] = Math.round(a[2] + (b[2] - a[2]) * u);
  return out;
}

export const css = (c: Rgb, alpha = 1) => (alpha >= 1 ? `rgb(${c[0]},${c[1]},${c[2]})` : `rgba(${c[0]},${c[1]},${c[2]},${alpha})`);

/** Relative luminance (sRGB weights, no gamma): ordering checks in tests. */
export const luminance = (c: Rgb) => 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];

/** Usage heat of a non-resident expert: `t` = uses ÷ the layer's most used (0..1); a
 * square-root curve so rarely used experts still show. */
export function heatRgb(t: number, out: Rgb = [0, 0, 0]): Rgb {
  return mix(PALETTE.empty, PALETTE.heatHi, Math.sqrt(clamp01(t)), out);
}

/** Colour of a selection placement code (0 GPU hit, 1 GPU fetch, 2 CPU). */
export function placementRgb(place: number): Rgb {
  return place === 0 ? PALETTE.gpuHit : place === 1 ? PALETTE.gpuFetch : PALETTE.cpu;
}

/** Inputs of one cell. Ages are ms since the event (Infinity: never). */
export interface CellInput {
  /** 0 absent, 1 resident, 2 arrived, 3 evicted (engine residency codes). */
  residency: number;
  /** Usage heat 0..1. */
  heat: number;
  /** Placement of the last selection (-1: never selected). */
  place: number;
  /** Steps since the expert was last selected (0: the current token). */
  selectedAgo: number;
  /** Since it was evicted. */
  evictedAgo: number;
  /** Since it arrived in VRAM. */
  arrivedAgo: number;
}

/** The cell's colour: base from residency or heat, then an eviction/arrival mark, then
 * the glow of a recent selection in its placement colour (the strongest signal). */
export function cellRgb(c: CellInput, out: Rgb = [0, 0, 0]): Rgb {
  if (c.residency === 1 || c.residency === 2) {
    out[0] = PALETTE.resident[0];
    out[1] = PALETTE.resident[1];
    out[2] = PALETTE.resident[2];
  } else {
    heatRgb(c.heat, out);
  }
  if (c.evictedAgo < MARK_MS) mix(PALETTE.evicted, out, c.evictedAgo / MARK_MS, out);
  else if (c.arrivedAgo < MARK_MS || c.residency === 2) {
    mix(PALETTE.arrived, out, Math.min(c.arrivedAgo, MARK_MS) / MARK_MS, out);
  }
  if (c.place >= 0 && c.selectedAgo < GLOW_STEPS) {
    // Full colour for the current token, fading to the base over GLOW_STEPS tokens: at
    // any token rate the map shows the last few tokens, not a smear of the last second.
    mix(placementRgb(c.place), out, c.selectedAgo / GLOW_STEPS, out);
  }
  return out;
}

/** Which side bounds a layer (the critical path): `cpu`, `gpu` or `pcie`. */
export function criticalSide(cpu: number, gpu: number, pcie: number): "cpu" | "gpu" | "pcie" {
  if (cpu >= gpu) return "cpu";
  return pcie * 2 >= gpu ? "pcie" : "gpu";
}

export function sideRgb(side: "cpu" | "gpu" | "pcie"): Rgb {
  return side === "cpu" ? PALETTE.cpu : side === "gpu" ? PALETTE.gpuHit : PALETTE.gpuFetch;
}
