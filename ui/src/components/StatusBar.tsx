import type { EngineState } from "../stores/engine";

const STAGES: Record<string, string> = {
  opening: "Opening file",
  tokenizer: "Tokenizer",
  weights: "Preparing weights",
  calibrating: "Calibrating",
  ready: "Ready",
};

export function StatusBar({ engine }: { engine: EngineState }) {
  const s = engine.status;
  let text: string;
  let cls = "";
  if (s.state === "ready") {
    text = `${s.model.name} · ${s.model.quant.toUpperCase()} · ctx ${s.model.context_length.toLocaleString()}`;
    cls = "ok";
  } else if (s.state === "loading") {
    const p = engine.progress ?? s.progress;
    const pct = p && p.total > 0 ? ` ${Math.round((p.done / p.total) * 100)}%` : "";
    text = `Loading — ${p ? STAGES[p.stage] ?? p.stage : "starting"}${pct}`;
    cls = "busy";
  } else if (s.state === "failed") {
    text = `Load failed: ${s.error}`;
    cls = "bad";
  } else {
    text = "No model loaded";
  }
  return (
    <footer class="statusbar" data-testid="engine-status" data-state={s.state}>
      <span class={`dot ${cls}`} /> <span>{text}</span>
    </footer>
  );
}
