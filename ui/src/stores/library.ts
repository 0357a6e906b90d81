// Model library and machine facts.
import { api, EVENTS } from "../services/api";
import type { LibraryModel, SystemInfo } from "../services/types";
import { errorMessage } from "../services/types";
import { Store } from "./store";

export interface LibraryState {
  models: LibraryModel[];
  system: SystemInfo | null;
  loading: boolean;
  error: string | null;
  notice: string | null;
}

export class LibraryStore extends Store<LibraryState> {
  constructor() {
    super({ models: [], system: null, loading: false, error: null, notice: null });
  }

  async init(): Promise<void> {
    await api.on<null>(EVENTS.libraryChanged, () => void this.refresh());
    await this.refresh();
  }

  async refresh(): Promise<void> {
    this.set({ loading: true });
    try {
      const [models, system] = await Promise.all([api.listModels(), api.systemInfo()]);
      this.set({ models, system, loading: false, error: null });
    } catch (e) {
      this.set({ loading: false, error: errorMessage(e) });
    }
  }

  async importFromDisk(): Promise<void> {
    try {
      const m = await api.importModel();
      if (m) this.set({ notice: `Imported ${m.name}` });
      await this.refresh();
    } catch (e) {
      this.set({ error: errorMessage(e) });
    }
  }

  async remove(id: string): Promise<number | null> {
    try {
      const freed = await api.deleteModel(id);
      await this.refresh();
      return freed;
    } catch (e) {
      this.set({ error: errorMessage(e) });
      return null;
    }
  }
}

export const libraryStore = new LibraryStore();
