import { useEffect } from "preact/hooks";
import type { FitVerdict, LibraryModel } from "../services/types";
import { formatBytes } from "../lib/format";
import { engineStore } from "../stores/engine";
import { libraryStore } from "../stores/library";
import { useStore } from "../stores/store";
import { Icon } from "./Icon";

const FIT_LABEL: Record<FitVerdict, string> = {
  fits: "Fits",
  fits_with_offload: "Fits with offload",
  wont_fit: "Won't fit",
};

const SOURCE_LABEL: Record<LibraryModel["source"], string> = {
  demo: "Built-in demo",
  download: "Downloaded",
  imported: "Imported",
  app: "Models folder",
  hf_cache: "Hugging Face cache",
};

export function ModelsScreen() {
  const lib = useStore(libraryStore);
  const engine = useStore(engineStore);
  useEffect(() => void libraryStore.refresh(), []);
  const loadedPath = engine.status.state === "ready" ? engine.status.model.path : null;
  const loadingPath = engine.status.state === "loading" ? engine.status.path : null;
  const sys = lib.system;

  return (
    <div class="page">
      <header class="page-head">
        <div>
          <h2>Models</h2>
          <p class="muted">GGUF models in the app's folder and the Hugging Face cache.</p>
        </div>
        <div class="row gap">
          <button class="btn ghost" onClick={() => void libraryStore.refresh()}><Icon name="refresh" size={16} /> Rescan</button>
          <button class="btn primary" onClick={() => void libraryStore.importFromDisk()} data-testid="import-model"><Icon name="folder" size={16} /> Import .gguf</button>
        </div>
      </header>
      {sys && (
        <div class="cards">
          <div class="card stat"><span class="label">RAM</span><span class="value">{formatBytes(sys.ram_total)}</span>
            <span class="muted">{formatBytes(sys.ram_available)} free</span></div>
          <div class="card stat"><span class="label">GPU</span><span class="value">{sys.vram_total ? formatBytes(sys.vram_total) : "None"}</span>
            <span class="muted">{sys.gpu_name ?? "CPU-only: experts run on the CPU"}</span></div>
          <div class="card stat"><span class="label">CPU</span><span class="value">{sys.cpus} threads</span><span class="muted">expert kernels</span></div>
          <div class="card stat"><span class="label">Disk</span><span class="value">{formatBytes(sys.disk_free)}</span><span class="muted">free for models</span></div>
        </div>
      )}
      {lib.error && <div class="banner error">{lib.error}</div>}
      {lib.notice && <div class="banner">{lib.notice}</div>}
      <div class="model-list" data-testid="model-list">
        {lib.models.length === 0 && !lib.loading && <div class="empty card">No models yet. Download one or import a .gguf file.</div>}
        {lib.models.map((m) => (
          <div class="card model" key={m.id} data-testid="model" data-source={m.source}>
            <div class="model-main">
              <div class="model-title">
                <strong>{m.name}</strong>
                {m.path === loadedPath && <span class="badge ok">Loaded</span>}
                {m.path === loadingPath && <span class="badge">Loading…</span>}
              </div>
              <div class="muted small">{SOURCE_LABEL[m.source]}{m.repo ? ` · ${m.repo}` : ""}</div>
              {m.meta ? (
                <div class="chips">
                  <span class="chip">{m.meta.architecture}</span>
                  <span class="chip">{m.meta.quant.toUpperCase()}</span>
                  <span class="chip">{formatBytes(m.size_bytes)}</span>
                  <span class="chip">{m.meta.n_layers} layers</span>
                  {m.meta.n_experts > 0 && <span class="chip">{m.meta.n_experts} experts · top-{m.meta.top_k}</span>}
                  <span class="chip">{m.meta.context_length.toLocaleString()} ctx</span>
                </div>
              ) : (
                <div class="note error small">Unreadable: {m.error}</div>
              )}
              {m.fit && (
                <div class={`fit ${m.fit.verdict}`} data-testid="fit">
                  <span class="dot" /> <strong>{FIT_LABEL[m.fit.verdict]}</strong> <span class="muted">— {m.fit.reason}</span>
                </div>
              )}
            </div>
            <div class="model-actions">
              <button class="btn primary sm" disabled={!m.meta || m.path === loadedPath || m.path === loadingPath}
                onClick={() => void engineStore.load(m.id)} data-testid="load-model">Load</button>
              <button class="btn ghost sm danger" onClick={async () => {
                if (!confirm(`Delete ${m.name}? This frees ${formatBytes(m.size_bytes)}.`)) return;
                const freed = await libraryStore.remove(m.id);
                if (freed != null) libraryStore.set({ notice: `Deleted ${m.name}: ${formatBytes(freed)} freed` });
              }}>
                <Icon name="trash" size={14} /> {formatBytes(m.size_bytes)}
              </button>
            </div>
          </div>
        ))}
      </div>
    </div>
  );
}
