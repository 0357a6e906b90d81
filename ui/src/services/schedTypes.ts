// Payloads of the scheduler panel (src-tauri/src/core/sched/models.rs and the engine's
// moe/stats.rs). Arrays are flat-indexed `layer * n_experts + expert`.

export interface SchedModel {
  name: string;
  n_layers: number;
  n_experts: number;
  top_k: number;
  expert_bytes: number;
}

export interface LayerTimes {
  cpu: number;
  gpu: number;
  pcie: number;
  finish: number;
  /** -1: not measured. */
  measured: number;
}

export interface StepSummary {
  step: number;
  n_tokens: number;
  wall_s: number;
  predicted_s: number;
  accesses: number;
  hits: number;
  pcie_bytes: number;
  layers: LayerTimes[];
}

export interface Counters {
  window_steps: number;
  tok_s: number;
  hit_rate: number;
  pcie_gbps: number;
  cpu_util: number;
  gpu_util: number;
  cost_error: number | null;
  cpu_share: number;
}

/** Placement codes in `SchedFrame.current`. */
export const PLACE_GPU_HIT = 0;
export const PLACE_GPU_FETCH = 1;
export const PLACE_CPU = 2;

export interface SchedFrame {
  steps: number;
  tokens: number;
  last_step: number;
  lagged: number;
  /** Per layer: [expert, placement]. */
  current: [number, number][][];
  timeline: StepSummary[];
  evicted: [number, number][];
  loaded: [number, number][];
  counters: Counters;
}

export interface ExpertStats {
  uses: number[];
  hits: number[];
  fetches: number[];
  cpu_runs: number[];
  /** -1: never. */
  last_use: number[];
}

export interface AppliedOptions {
  policy: string;
  vram_budget_bytes: number | null;
  prefetch: boolean;
  threads: number;
}

/** Residency codes in `SchedSnapshot.residency`. */
export const RES_ABSENT = 0;
export const RES_RESIDENT = 1;
export const RES_ARRIVED = 2;
export const RES_EVICTED = 3;

export interface SchedSnapshot {
  steps: number;
  n_layers: number;
  n_experts: number;
  top_k: number;
  expert_bytes: number;
  gpu: string | null;
  applied: AppliedOptions;
  cache_slots: number;
  cache_resident: number;
  cache_bytes_used: number;
  stats: ExpertStats;
  score: number[];
  residency: number[];
  prediction_error: number | null;
}

export type SchedMessage =
  | { kind: "model"; model: SchedModel | null }
  | ({ kind: "frame" } & SchedFrame)
  | ({ kind: "snapshot" } & SchedSnapshot);

export interface RuntimeOptions {
  threads: number;
  policy: string;
  vram_budget_bytes: number | null;
  prefetch: boolean;
}

export interface SchedOptionsView {
  requested: RuntimeOptions;
  applied: AppliedOptions | null;
  gpu: string | null;
  policies: string[];
}

export interface WhatIfRow {
  policy: string;
  size: string;
  cache_fraction: number;
  hit_rate: number;
  belady_hit_rate: number;
  tok_s: number;
  speedup: number;
  pcie_bytes_per_token: number;
}

export interface WhatIfReport {
  steps: number;
  tokens: number;
  warmup_steps: number;
  profile: string;
  shape: string;
  current_policy: string;
  policies: string[];
  sizes: string[];
  rows: WhatIfRow[];
}

/** Sections of the panel that fold (true = open); core/settings/panel.rs. */
export interface PanelSections {
  counters: boolean;
  cache_map: boolean;
  timeline: boolean;
  controls: boolean;
  what_if: boolean;
}

export type PanelPalette = "default" | "colorblind";

/** The panel's view settings, saved by the back end (`panel_settings_get/set`). */
export interface PanelSettings {
  docked: boolean;
  sections: PanelSections;
  /** Steps drawn by the sparklines and the timeline. */
  window_steps: number;
  heat_overlay: boolean;
  cache_marks: boolean;
  palette: PanelPalette;
}

/** Bounds of `window_steps` (MIN/MAX_WINDOW_STEPS in core/settings/panel.rs). */
export const MIN_WINDOW_STEPS = 8;
export const MAX_WINDOW_STEPS = 160;

export const DEFAULT_PANEL_SETTINGS: PanelSettings = {
  docked: false,
  sections: { counters: true, cache_map: true, timeline: true, controls: true, what_if: true },
  window_steps: 64,
  heat_overlay: true,
  cache_marks: true,
  palette: "default",
};
