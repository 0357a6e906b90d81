import { useEffect, useState } from "preact/hooks";
import type { DownloadView } from "../services/types";
import { formatBytes, formatDuration, formatSpeed } from "../lib/format";
import { downloadsStore, REPO_RE } from "../stores/downloads";
import { libraryStore } from "../stores/library";
import { useStore } from "../stores/store";
import { Icon } from "./Icon";

function Progress({ d }: { d: DownloadView }) {
  const pct = d.size > 0 ? Math.min(100, (d.bytes_done / d.size) * 100) : 0;
  return (
    <div class="dl" data-testid="download" data-status={d.status}>
      <div class="row between">
        <div>
          <strong>{d.file}</strong> <span class="muted small">{d.repo}</span>
        </div>
        <span class={`badge ${d.status === "complete" ? "ok" : d.status === "failed" ? "bad" : ""}`}>{d.status}</span>
      </div>
      <div class="bar"><div class="fill" style={{ width: `${pct.toFixed(1)}%` }} /></div>
      <div class="row between small">
        <span data-testid="download-bytes">
          {formatBytes(d.bytes_done)} / {formatBytes(d.size)} ({pct.toFixed(0)}%)
          {d.status === "running" && ` · ${formatSpeed(d.speed_bps)} · ETA ${formatDuration(d.eta_s)}`}
        </span>
        <span class="row gap">
          {d.status === "running" && (
            <button class="btn ghost sm" onClick={() => void downloadsStore.act("pause", d.id)} data-testid="pause">
              <Icon name="pause" size={14} /> Pause</button>
          )}
          {(d.status === "paused" || d.status === "failed") && (
            <button class="btn ghost sm" onClick={() => void downloadsStore.act("resume", d.id)} data-testid="resume">
              <Icon name="play" size={14} /> Resume</button>
          )}
          {!["complete", "cancelled"].includes(d.status) && (
            <button class="btn ghost sm danger" onClick={() => void downloadsStore.act("cancel", d.id)}>
              <Icon name="x" size={14} /> Cancel</button>
          )}
        </span>
      </div>
      {d.error && <div class="note error small">{d.error}</div>}
    </div>
  );
}

export function DownloadsScreen() {
  const st = useStore(downloadsStore);
  const lib = useStore(libraryStore);
  const [repo, setRepo] = useState(st.repoInput);
  useEffect(() => void downloadsStore.refresh(), []);
  const free = lib.system?.disk_free ?? null;

  return (
    <div class="page">
      <header class="page-head">
        <div>
          <h2>Downloads</h2>
          <p class="muted">GGUF files from Hugging Face (or the mirror set in Settings). Interrupted downloads resume where they stopped.</p>
        </div>
      </header>
      <form class="repo-form" onSubmit={(e) => { e.preventDefault(); void downloadsStore.submit(repo); }}>
        <input data-testid="repo-input" placeholder="org/repository, or search: e.g. qwen3 30b a3b"
          value={repo} onInput={(e) => setRepo((e.target as HTMLInputElement).value)} />
        <button class="btn primary" type="submit" disabled={st.browsing} data-testid="browse">
          <Icon name="search" size={16} /> {st.browsing ? "Loading…" : REPO_RE.test(repo.trim()) ? "List files" : "Search"}</button>
      </form>
      {st.error && <div class="banner error">{st.error}</div>}
      {st.hits && (
        <div class="card" data-testid="search-results">
          {st.hits.length === 0 && <p class="muted">No repository with GGUF files matches.</p>}
          {st.hits.map((h) => (
            <button key={h.repo} type="button" class="search-hit" data-testid="search-hit"
              onClick={() => { setRepo(h.repo); void downloadsStore.browse(h.repo); }}>
              <strong>{h.repo}</strong>
              <span class="muted small">{h.downloads != null ? `${h.downloads.toLocaleString()} downloads` : ""}</span>
            </button>
          ))}
        </div>
      )}
      {st.listing && (
        <div class="card">
          <div class="row between">
            <strong>{st.listing.repo}</strong>
            <span class="muted small">{st.listing.commit ? `commit ${st.listing.commit.slice(0, 10)}` : st.listing.revision}</span>
          </div>
          {st.listing.files.length === 0 && <p class="muted">This repository has no GGUF files.</p>}
          <table class="files">
            <thead><tr><th>File</th><th>Quant</th><th>Size</th><th /></tr></thead>
            <tbody>
              {st.listing.files.map((f) => {
                const tooBig = free != null && f.size > free;
                return (
                  <tr key={f.name} data-testid="hub-file">
                    <td>{f.name}{f.files.length > 1 && <span class="muted small"> ({f.files.length} parts)</span>}</td>
                    <td>{f.quant ?? "–"}</td>
                    <td>{formatBytes(f.size)}</td>
                    <td class="end">
                      <button class="btn primary sm" disabled={tooBig} title={tooBig ? "Not enough free disk space" : ""}
                        onClick={() => void downloadsStore.start(f.files)} data-testid="download-file">
                        <Icon name="download" size={14} /> {tooBig ? "No space" : "Download"}</button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <h3 class="section">Transfers</h3>
      {st.downloads.length === 0 && <div class="empty card">No downloads yet.</div>}
      <div class="dl-list">{st.downloads.map((d) => <Progress key={d.id} d={d} />)}</div>
    </div>
  );
}
