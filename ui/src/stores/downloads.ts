// Hub browsing and downloads (progress arrives as throttled events).
import { api, EVENTS } from "../services/api";
import type { DownloadView, HubRepoListing, HubSearchHit } from "../services/types";
import { errorMessage } from "../services/types";
import { Store } from "./store";

export interface DownloadsState {
  repoInput: string;
  listing: HubRepoListing | null;
  browsing: boolean;
  /** Results of the last search (null: no search shown). */
  hits: HubSearchHit[] | null;
  downloads: DownloadView[];
  error: string | null;
}

/** `org/name`, the only repo form the Hub accepts (checked again in Rust). */
export const REPO_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/;

export class DownloadsStore extends Store<DownloadsState> {
  constructor() {
    super({ repoInput: "", listing: null, browsing: false, hits: null, downloads: [], error: null });
  }

  async init(): Promise<void> {
    await api.on<DownloadView>(EVENTS.downloadProgress, (d) => this.upsert(d));
    await this.refresh();
  }

  /** Takes an event's view unless the store already holds a later one. */
  upsert(d: DownloadView): void {
    this.set((s) => {
      const i = s.downloads.findIndex((x) => x.id === d.id);
      if (i !== -1 && s.downloads[i].seq > d.seq) return {};
      const downloads = i === -1 ? [d, ...s.downloads] : s.downloads.map((x) => (x.id === d.id ? d : x));
      return { downloads };
    });
  }

  async refresh(): Promise<void> {
    try {
      const fresh = await api.listDownloads();
      // A list read before a state change may arrive after the event that reported it:
      // keep whichever view is later.
      this.set((s) => ({ downloads: mergeBySeq(s.downloads, fresh) }));
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }

  /** `org/name` lists the repository's files; any other text searches the Hub. */
  async submit(text: string): Promise<void> {
    const t = text.trim();
    if (REPO_RE.test(t)) await this.browse(t);
    else await this.search(t);
  }

  async search(query: string): Promise<void> {
    const q = query.trim();
    this.set({ repoInput: q, error: null, listing: null });
    if (!q || q.includes("..") || q.length > 100) {
      this.set({ hits: null, error: "Enter a repository as org/name, or a few words to search for" });
      return;
    }
    this.set({ browsing: true, hits: null });
    try {
      this.set({ hits: await api.hubSearch(q), browsing: false });
    } catch (e) {
      this.set({ browsing: false, error: errorMessage(e) });
    }
  }

  async browse(repo: string): Promise<void> {
    const r = repo.trim();
    this.set({ repoInput: r, error: null });
    if (!REPO_RE.test(r)) {
      this.set({ error: "Enter a repository as org/name, e.g. unsloth/Qwen3-30B-A3B-Instruct-2507-GGUF" });
      return;
    }
    this.set({ browsing: true, listing: null, hits: null });
    try {
      this.set({ listing: await api.hubListFiles(r), browsing: false });
    } catch (e) {
      this.set({ browsing: false, error: errorMessage(e) });
    }
  }

  async start(files: string[]): Promise<void> {
    const l = this.get().listing;
    if (!l) return;
    try {
      const started = await api.startDownload(l.repo, l.commit ?? l.revision, files);
      for (const d of started) this.upsert(d);
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }

  async act(kind: "pause" | "resume" | "cancel", id: number): Promise<void> {
    try {
      if (kind === "pause") await api.pauseDownload(id);
      else if (kind === "resume") await api.resumeDownload(id);
      else await api.cancelDownload(id);
      await this.refresh();
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }
}

/** The list as `fresh` has it, except rows for which `held` has a later view. */
export function mergeBySeq(held: DownloadView[], fresh: DownloadView[]): DownloadView[] {
  const byId = new Map(held.map((d) => [d.id, d]));
  return fresh.map((d) => {
    const h = byId.get(d.id);
    return h && h.seq > d.seq ? h : d;
  });
}

export const downloadsStore = new DownloadsStore();
