// Settings screen state: settings, the HF token (masked only), the models folder change
// flow (check, then move or leave) and the remote endpoints.
import { api } from "../services/api";
import type {
  AppSettings,
  BackendChoice,
  EndpointInput,
  FolderChange,
  FolderCheck,
  RemoteEndpoint,
  ServerStatus,
  SettingsView,
} from "../services/types";
import { errorMessage } from "../services/types";
import { Store } from "./store";

export interface SettingsState {
  view: SettingsView | null;
  saving: boolean;
  saved: boolean;
  error: string | null;
  endpoints: RemoteEndpoint[];
  /** Result of the last folder check (for the path in `folderPath`). */
  folderCheck: FolderCheck | null;
  folderPath: string;
  folderBusy: boolean;
  folderDone: FolderChange | null;
  /** Per endpoint id: models it listed, or the error of the test. */
  endpointTests: Record<number, { ok: boolean; text: string }>;
  server: ServerStatus;
  serverBusy: boolean;
}

const initial: SettingsState = {
  view: null, saving: false, saved: false, error: null, endpoints: [],
  folderCheck: null, folderPath: "", folderBusy: false, folderDone: null, endpointTests: {},
  server: { running: false, url: null, model: null, api_key_required: false }, serverBusy: false,
};

/** Label of a backend choice for menus and chips. */
export function backendLabel(b: BackendChoice, endpoints: RemoteEndpoint[]): string {
  if (b.kind === "local") return "This computer";
  const ep = endpoints.find((e) => e.id === b.endpoint_id);
  return ep ? `${ep.name} (${ep.model})` : "Deleted endpoint";
}

export class SettingsStore extends Store<SettingsState> {
  constructor() {
    super(initial);
  }

  async load(): Promise<void> {
    try {
      const [view, endpoints, server] = await Promise.all([api.getSettings(), api.listEndpoints(), api.serverStatus()]);
      this.set({ view, endpoints, server, error: null });
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }

  async save(s: AppSettings): Promise<boolean> {
    this.set({ saving: true, saved: false, error: null });
    try {
      this.set({ view: await api.setSettings(s), saving: false, saved: true });
      return true;
    } catch (e) {
      this.set({ saving: false, error: errorMessage(e) });
      return false;
    }
  }

  /** Saves (or with null/"" removes) the token; the view only ever holds the masked form. */
  async setToken(token: string | null): Promise<boolean> {
    return this.guard(async () => {
      this.set({ view: await api.setHfToken(token && token.trim() ? token.trim() : null) });
    });
  }

  setFolderPath(path: string): void {
    this.set({ folderPath: path, folderCheck: null, folderDone: null });
  }

  async pickFolder(): Promise<void> {
    await this.guard(async () => {
      const p = await api.pickModelsFolder();
      if (p) {
        this.setFolderPath(p);
        await this.checkFolder();
      }
    });
  }

  async checkFolder(): Promise<FolderCheck | null> {
    const path = this.get().folderPath.trim();
    let out: FolderCheck | null = null;
    await this.guard(async () => {
      out = await api.checkModelsFolder(path);
      this.set({ folderCheck: out });
    });
    return out;
  }

  /** Switches the models folder, moving the models or leaving them where they are. */
  async changeFolder(move: boolean): Promise<boolean> {
    const path = this.get().folderCheck?.path ?? this.get().folderPath.trim();
    this.set({ folderBusy: true });
    const ok = await this.guard(async () => {
      const done = await api.changeModelsFolder(path, move);
      this.set({ folderDone: done, folderCheck: null, folderPath: "" });
      this.set({ view: await api.getSettings() });
    });
    this.set({ folderBusy: false });
    return ok;
  }

  async saveEndpoint(input: EndpointInput): Promise<RemoteEndpoint | null> {
    let out: RemoteEndpoint | null = null;
    await this.guard(async () => {
      out = await api.saveEndpoint(input);
      this.set({ endpoints: await api.listEndpoints() });
    });
    return out;
  }

  async deleteEndpoint(id: number): Promise<void> {
    await this.guard(async () => {
      await api.deleteEndpoint(id);
      const [endpoints, view] = await Promise.all([api.listEndpoints(), api.getSettings()]);
      this.set({ endpoints, view });
    });
  }

  async testEndpoint(id: number): Promise<void> {
    let r: { ok: boolean; text: string };
    try {
      const models = await api.testEndpoint(id);
      r = { ok: true, text: models.length ? `Serves ${models.join(", ")}` : "Reachable; lists no model" };
    } catch (e) {
      r = { ok: false, text: errorMessage(e) };
    }
    this.set((s) => ({ endpointTests: { ...s.endpointTests, [id]: r } }));
  }

  /** Starts (or stops) the local OpenAI-compatible server on the loaded model. */
  async startServer(port: number, apiKey: string | null): Promise<boolean> {
    this.set({ serverBusy: true });
    const ok = await this.guard(async () => {
      this.set({ server: await api.startServer(port, apiKey && apiKey.trim() ? apiKey.trim() : null) });
    });
    this.set({ serverBusy: false });
    return ok;
  }

  async stopServer(): Promise<void> {
    this.set({ serverBusy: true });
    await this.guard(async () => {
      this.set({ server: await api.stopServer() });
    });
    this.set({ serverBusy: false });
  }

  clearError(): void {
    this.set({ error: null });
  }

  private async guard(f: () => Promise<void>): Promise<boolean> {
    try {
      this.set({ error: null });
      await f();
      return true;
    } catch (e) {
      this.set({ error: errorMessage(e) });
      return false;
    }
  }
}

export const settingsStore = new SettingsStore();
