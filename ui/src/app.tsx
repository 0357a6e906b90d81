import { useEffect, useState } from "preact/hooks";
import { ChatScreen } from "./components/ChatScreen";
import { DownloadsScreen } from "./components/DownloadsScreen";
import { Icon } from "./components/Icon";
import { ModelsScreen } from "./components/ModelsScreen";
import { SchedulerPanel } from "./components/SchedulerSlot";
import { SettingsScreen } from "./components/SettingsScreen";
import { StatusBar } from "./components/StatusBar";
import { engineStore } from "./stores/engine";
import { panelSettingsStore } from "./stores/panelSettings";
import { useStore } from "./stores/store";

export type Route = "chat" | "models" | "downloads" | "settings" | "scheduler";
const ROUTES: { id: Route; label: string; icon: string }[] = [
  { id: "chat", label: "Chat", icon: "chat" },
  { id: "models", label: "Models", icon: "models" },
  { id: "downloads", label: "Downloads", icon: "download" },
  { id: "settings", label: "Settings", icon: "settings" },
];

export function parseRoute(hash: string): Route {
  const r = hash.replace(/^#\/?/, "").split("/")[0];
  return (["chat", "models", "downloads", "settings", "scheduler"] as Route[]).includes(r as Route) ? (r as Route) : "chat";
}

export function App() {
  const [route, setRoute] = useState<Route>(parseRoute(location.hash));
  // Docked or not is a saved panel setting (core/settings/panel.rs).
  const schedulerDocked = useStore(panelSettingsStore).settings.docked;
  const engine = useStore(engineStore);
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);

  return (
    <div class="shell">
      <nav class="rail" aria-label="Main">
        <div class="logo" title="Hybrid MoE Studio">
          <svg viewBox="0 0 24 24" width="26" height="26" aria-hidden="true">
            {[0, 1, 2].flatMap((r) => [0, 1, 2].map((c) => (
              <rect key={`${r}${c}`} x={3 + c * 6.5} y={3 + r * 6.5} width="5" height="5" rx="1.2"
                fill={(r + c) % 2 === 0 ? "var(--accent)" : "var(--rail-muted)"} />
            )))}
          </svg>
        </div>
        {ROUTES.map((r) => (
          <a key={r.id} href={`#/${r.id}`} class={route === r.id ? "active" : ""} title={r.label} data-testid={`nav-${r.id}`}>
            <Icon name={r.icon} size={20} />
            <span>{r.label}</span>
          </a>
        ))}
        <div class="spacer" />
        <button class={`rail-btn ${schedulerDocked ? "active" : ""}`} title="Scheduler panel" data-testid="toggle-scheduler"
          onClick={() => panelSettingsStore.update({ docked: !schedulerDocked })}>
          <Icon name="scheduler" size={20} />
          <span>Scheduler</span>
        </button>
      </nav>
      <main class="content">
        {route === "chat" && <ChatScreen />}
        {route === "models" && <ModelsScreen />}
        {route === "downloads" && <DownloadsScreen />}
        {route === "settings" && <SettingsScreen />}
        {route === "scheduler" && <SchedulerPanel docked={false} />}
      </main>
      {schedulerDocked && route !== "scheduler" && <SchedulerPanel docked />}
      <StatusBar engine={engine} />
    </div>
  );
}
