// Engine status (from the engine-status event and engine_status polling) and model loading.
import { api, EVENTS } from "../services/api";
import type { EngineStatus, LoadProgress } from "../services/types";
import { errorMessage } from "../services/types";
import { Store } from "./store";

export interface EngineState {
  status: EngineStatus;
  progress: LoadProgress | null;
  error: string | null;
}

/** Status poll period (ms). */
const POLL_MS = 2000;

export class EngineStore extends Store<EngineState> {
  constructor() {
    super({ status: { state: "idle" }, progress: null, error: null });
  }

  async init(): Promise<void> {
    // Events emitted before this listener existed (the demo model can load before the page
    // does) are lost, so also poll: cheap, and the status bar converges whatever the timing.
    setInterval(() => void this.poll(), POLL_MS);
    await this.poll();
    await api.on<EngineStatus>(EVENTS.engineStatus, (status) => this.set({ status }));
  }

  async poll(): Promise<void> {
    try {
      this.set({ status: await api.engineStatus() });
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }

  async load(modelId: string): Promise<void> {
    this.set({ error: null, progress: null, status: { state: "loading", path: modelId, progress: null } });
    try {
      await api.loadModel(modelId, (ev) => {
        if (ev.type === "progress") this.set({ progress: ev.progress });
        else if (ev.type === "ready") this.set({ status: { state: "ready", model: ev.model }, progress: null });
        else this.set({ status: { state: "failed", path: modelId, error: ev.error }, error: ev.error });
      });
    } catch (e) {
      this.set({ error: errorMessage(e) });
      await this.poll();
    }
  }

  async unload(): Promise<void> {
    await api.unloadModel();
    await this.poll();
  }
}

export const engineStore = new EngineStore();
