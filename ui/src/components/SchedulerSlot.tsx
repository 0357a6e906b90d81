// The scheduler panel (docked at the right or full-size at #/scheduler). Kept as the
// module app.tsx imports; the panel lives in SchedulerPanel.tsx.
export { SchedulerPanel } from "./SchedulerPanel";
