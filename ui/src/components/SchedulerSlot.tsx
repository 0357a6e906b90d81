// ── SCHEDULER PANEL SLOT ────────────────────────────────────────────────────────────────
// Reserved for the live scheduler visualisation (experts in VRAM, where each expert of each
// token ran). Another component will replace the body of `SchedulerPanel`; the layout
// (right-side panel, toggled from the nav rail, and the #/scheduler route) is already wired.
export function SchedulerPanel({ docked }: { docked: boolean }) {
  return (
    <aside class={`scheduler-slot ${docked ? "docked" : "full"}`} data-slot="scheduler" aria-label="Scheduler">
      <h3>Scheduler</h3>
      <p class="muted">The live view of expert placement (CPU / GPU / cache) will appear here.</p>
      <div class="placeholder-grid" aria-hidden="true">
        {Array.from({ length: 48 }, (_, i) => <span key={i} class={i % 7 === 0 ? "on" : ""} />)}
      </div>
    </aside>
  );
}
