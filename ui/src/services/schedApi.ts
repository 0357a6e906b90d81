// Typed wrappers of the scheduler panel's commands (src-tauri/src/core/sched/commands.rs).
import { transport } from "./ipc";
import type { PanelSettings, RuntimeOptions, SchedMessage, SchedOptionsView, SchedSnapshot, WhatIfReport } from "./schedTypes";

const call = <T>(cmd: string, args?: Record<string, unknown>) => transport().invoke<T>(cmd, args);

export const schedApi = {
  /** Starts the panel's stream; resolves to the subscription id. */
  subscribe: (onEvent: (m: SchedMessage) => void) => {
    const ch = transport().channel<SchedMessage>();
    ch.onmessage = onEvent;
    return call<number>("sched_subscribe", { onEvent: ch.handle });
  },
  unsubscribe: (id: number) => call<boolean>("sched_unsubscribe", { id }),
  snapshot: () => call<SchedSnapshot | null>("sched_snapshot"),
  options: () => call<SchedOptionsView>("sched_options_get"),
  setOptions: (options: RuntimeOptions) => call<SchedOptionsView>("sched_options_set", { options }),
  whatIf: (fromStep: number | null, profile = "h100") =>
    call<WhatIfReport>("sched_whatif", { request: { from_step: fromStep, profile } }),
  exportTrace: (fromStep: number | null) => call<string | null>("sched_export_trace", { fromStep }),
  exportPlot: (svg: string) => call<string | null>("sched_export_plot", { svg }),
  panelSettings: () => call<PanelSettings>("panel_settings_get"),
  setPanelSettings: (settings: PanelSettings) => call<PanelSettings>("panel_settings_set", { settings }),
};
