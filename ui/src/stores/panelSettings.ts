// The scheduler panel's view settings (docked, open sections, chart window, overlays,
// palette), kept by the back end (core/settings/panel.rs). Loaded once at start; a change
// shows at once and is saved a moment later, so a burst of clicks costs one write.
import { schedApi } from "../services/schedApi";
import {
  DEFAULT_PANEL_SETTINGS, MAX_WINDOW_STEPS, MIN_WINDOW_STEPS,
  type PanelSections, type PanelSettings,
} from "../services/schedTypes";
import { errorMessage } from "../services/types";
import { Store } from "./store";

/** Delay between the last change and its save (ms). */
export const SAVE_DELAY_MS = 300;

export interface PanelSettingsState {
  settings: PanelSettings;
  /** The saved settings arrived (or loading failed and the defaults stay). */
  loaded: boolean;
  error: string | null;
}

/** Keeps the window inside what the back end accepts (a typed value out of range). */
export function clampWindow(n: number): number {
  if (!Number.isFinite(n)) return DEFAULT_PANEL_SETTINGS.window_steps;
  return Math.min(MAX_WINDOW_STEPS, Math.max(MIN_WINDOW_STEPS, Math.round(n)));
}

export class PanelSettingsStore extends Store<PanelSettingsState> {
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Changes not saved yet (a late load must not overwrite them). */
  private dirty = false;
  private saving: Promise<void> = Promise.resolve();

  constructor() {
    super({ settings: DEFAULT_PANEL_SETTINGS, loaded: false, error: null });
  }

  async load(): Promise<void> {
    try {
      const saved = await schedApi.panelSettings();
      if (!this.dirty) this.set({ settings: { ...DEFAULT_PANEL_SETTINGS, ...saved, sections: { ...DEFAULT_PANEL_SETTINGS.sections, ...saved.sections } } });
      this.set({ loaded: true, error: null });
    } catch (e) {
      this.set({ loaded: true, error: errorMessage(e) });
    }
  }

  /** Applies a change now and saves it after SAVE_DELAY_MS without further changes. */
  update(patch: Partial<PanelSettings>): void {
    const next = { ...this.get().settings, ...patch };
    next.window_steps = clampWindow(next.window_steps);
    this.set({ settings: next });
    this.dirty = true;
    if (this.timer != null) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.flush(), SAVE_DELAY_MS);
  }

  toggleSection(key: keyof PanelSections): void {
    const s = this.get().settings.sections;
    this.update({ sections: { ...s, [key]: !s[key] } });
  }

  /** Saves pending changes now (saves run one after another, the latest state last). */
  flush(): Promise<void> {
    if (this.timer != null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (!this.dirty) return this.saving;
    this.dirty = false;
    const settings = this.get().settings;
    this.saving = this.saving.then(async () => {
      try {
        await schedApi.setPanelSettings(settings);
        this.set({ error: null });
      } catch (e) {
        // Kept on screen; the next change tries again.
        this.set({ error: `View settings not saved: ${errorMessage(e)}` });
      }
    });
    return this.saving;
  }
}

export const panelSettingsStore = new PanelSettingsStore();
