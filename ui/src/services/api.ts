// Typed wrappers for every command of the back end (names match build.rs COMMANDS).
import { transport } from "./ipc";
import type {
  AppInfo,
  AppSettings,
  BackendChoice,
  EndpointInput,
  FolderChange,
  FolderCheck,
  RemoteEndpoint,
  ServerStatus,
  ChatStreamEvent,
  Conversation,
  ConversationSettings,
  DownloadView,
  EngineStatus,
  HubRepoListing,
  HubSearchHit,
  LibraryModel,
  LoadEvent,
  Message,
  SendResult,
  SettingsView,
  SystemInfo,
} from "./types";

/** Event names (core/events.rs). */
export const EVENTS = {
  engineStatus: "engine-status",
  downloadProgress: "download-progress",
  libraryChanged: "library-changed",
} as const;

const call = <T>(cmd: string, args?: Record<string, unknown>) => transport().invoke<T>(cmd, args);

function streaming<T, R>(cmd: string, args: Record<string, unknown>, onEvent: (e: T) => void): Promise<R> {
  const ch = transport().channel<T>();
  ch.onmessage = onEvent;
  return call<R>(cmd, { ...args, onEvent: ch.handle });
}

export const api = {
  appInfo: () => call<AppInfo>("app_info"),

  listConversations: (query?: string) => call<Conversation[]>("conversations_list", { query: query ?? null }),
  createConversation: (title?: string) => call<Conversation>("conversation_create", { title: title ?? null }),
  renameConversation: (id: number, title: string) => call<Conversation>("conversation_rename", { id, title }),
  deleteConversation: (id: number) => call<void>("conversation_delete", { id }),
  updateConversationSettings: (id: number, systemPrompt: string, settings: ConversationSettings | null) =>
    call<Conversation>("conversation_update_settings", { id, systemPrompt, settings }),
  exportConversation: (id: number, format: "markdown" | "json") => call<string>("conversation_export", { id, format }),
  exportConversationSave: (id: number, format: "markdown" | "json") =>
    call<string | null>("conversation_export_save", { id, format }),
  listMessages: (conversationId: number) => call<Message[]>("messages_list", { conversationId }),
  send: (conversationId: number, text: string, onEvent: (e: ChatStreamEvent) => void) =>
    streaming<ChatStreamEvent, SendResult>("chat_send", { conversationId, text }, onEvent),
  regenerate: (conversationId: number, onEvent: (e: ChatStreamEvent) => void) =>
    streaming<ChatStreamEvent, SendResult>("chat_regenerate", { conversationId }, onEvent),
  editResend: (messageId: number, text: string, onEvent: (e: ChatStreamEvent) => void) =>
    streaming<ChatStreamEvent, SendResult>("chat_edit_resend", { messageId, text }, onEvent),
  stop: (messageId: number) => call<boolean>("chat_stop", { messageId }),
  setConversationBackend: (id: number, backend: BackendChoice | null) =>
    call<Conversation>("conversation_set_backend", { id, backend }),
  listEndpoints: () => call<RemoteEndpoint[]>("remote_endpoints_list"),
  saveEndpoint: (endpoint: EndpointInput) => call<RemoteEndpoint>("remote_endpoint_save", { endpoint }),
  deleteEndpoint: (id: number) => call<void>("remote_endpoint_delete", { id }),
  testEndpoint: (id: number) => call<string[]>("remote_endpoint_test", { id }),

  engineStatus: () => call<EngineStatus>("engine_status"),
  loadModel: (modelId: string, onEvent: (e: LoadEvent) => void) =>
    streaming<LoadEvent, void>("engine_load", { modelId }, onEvent),
  unloadModel: () => call<void>("engine_unload"),

  listModels: () => call<LibraryModel[]>("models_list"),
  importModel: () => call<LibraryModel | null>("models_import"),
  deleteModel: (id: string) => call<number>("models_delete", { id }),
  systemInfo: () => call<SystemInfo>("system_info"),

  hubListFiles: (repo: string, revision?: string) =>
    call<HubRepoListing>("hub_list_files", { repo, revision: revision ?? null }),
  hubSearch: (query: string) => call<HubSearchHit[]>("hub_search", { query }),
  listDownloads: () => call<DownloadView[]>("downloads_list"),
  startDownload: (repo: string, revision: string, files: string[]) =>
    call<DownloadView[]>("download_start", { repo, revision, files }),
  pauseDownload: (id: number) => call<void>("download_pause", { id }),
  resumeDownload: (id: number) => call<void>("download_resume", { id }),
  cancelDownload: (id: number) => call<void>("download_cancel", { id }),

  getSettings: () => call<SettingsView>("settings_get"),
  setSettings: (settings: AppSettings) => call<SettingsView>("settings_set", { settings }),
  setHfToken: (token: string | null) => call<SettingsView>("settings_set_hf_token", { token }),
  checkModelsFolder: (path: string) => call<FolderCheck>("models_folder_check", { path }),
  pickModelsFolder: () => call<string | null>("models_folder_pick"),
  changeModelsFolder: (path: string, moveModels: boolean) =>
    call<FolderChange>("models_folder_change", { path, moveModels }),
  serverStatus: () => call<ServerStatus>("local_server_status"),
  startServer: (port: number, apiKey: string | null) => call<ServerStatus>("local_server_start", { port, apiKey }),
  stopServer: () => call<ServerStatus>("local_server_stop"),

  on: <T>(event: string, cb: (payload: T) => void) => transport().listen<T>(event, cb),
};
