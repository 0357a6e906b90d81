// Settings screen state.
import { api } from "../services/api";
import type { AppSettings, SettingsView } from "../services/types";
import { errorMessage } from "../services/types";
import { Store } from "./store";

export interface SettingsState {
  view: SettingsView | null;
  saving: boolean;
  saved: boolean;
  error: string | null;
}

export class SettingsStore extends Store<SettingsState> {
  constructor() {
    super({ view: null, saving: false, saved: false, error: null });
  }

  async load(): Promise<void> {
    try {
      this.set({ view: await api.getSettings(), error: null });
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
}

export const settingsStore = new SettingsStore();
