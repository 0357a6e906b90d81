import { render } from "preact";
import "highlight.js/styles/github-dark.css";
import "./styles.css";
import { App } from "./app";
import { chatStore } from "./stores/chat";
import { downloadsStore } from "./stores/downloads";
import { engineStore } from "./stores/engine";
import { libraryStore } from "./stores/library";
import { panelSettingsStore } from "./stores/panelSettings";
import { settingsStore } from "./stores/settings";

const root = document.getElementById("app");
if (root) render(<App />, root);
void Promise.all([engineStore.init(), chatStore.refresh(), libraryStore.init(), downloadsStore.init(), settingsStore.load(), panelSettingsStore.load()]);
