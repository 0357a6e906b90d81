// Wire types: mirror the serde types of src-tauri/src/core/*/models.rs.

export interface SamplingParams {
  temperature: number;
  top_k: number;
  top_p: number;
  min_p: number;
  repetition_penalty: number;
  repetition_window: number;
  seed: number;
  max_tokens: number;
  stop: string[];
}

export interface ConversationSettings {
  sampling: SamplingParams;
  enable_thinking: boolean;
}

/** Who answers a conversation (core/chat/models.rs BackendChoice). */
export type BackendChoice = { kind: "local" } | { kind: "remote"; endpoint_id: number };

export interface Conversation {
  id: number;
  title: string;
  system_prompt: string;
  settings: ConversationSettings | null;
  /** null = the app's default backend. */
  backend: BackendChoice | null;
  created_at: number;
  updated_at: number;
}

export type MessageStatus = "complete" | "streaming" | "interrupted" | "error";
export type FinishReason = "stop" | "stop_string" | "length" | "cancelled" | "context_full";

export interface MessageStats {
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
  time_to_first_token_s: number;
  prefill_tok_s: number;
  decode_tok_s: number;
  finish_reason: FinishReason;
}

export interface Message {
  id: number;
  conversation_id: number;
  seq: number;
  role: "system" | "user" | "assistant";
  content: string;
  status: MessageStatus;
  error: string | null;
  stats: MessageStats | null;
  created_at: number;
}

export interface SendResult {
  user_message_id: number | null;
  assistant_message_id: number;
}

export type ChatStreamEvent =
  | { type: "delta"; message_id: number; text: string }
  | { type: "done"; message_id: number; status: MessageStatus; stats: MessageStats | null; error: string | null };

export type LoadStage = "opening" | "tokenizer" | "weights" | "calibrating" | "ready";
export interface LoadProgress {
  stage: LoadStage;
  done: number;
  total: number;
}

export interface LoadedModelInfo {
  path: string;
  name: string;
  architecture: string;
  quant: string;
  context_length: number;
}

export type EngineStatus =
  | { state: "idle" }
  | { state: "loading"; path: string; progress: LoadProgress | null }
  | { state: "ready"; model: LoadedModelInfo }
  | { state: "failed"; path: string; error: string };

export type LoadEvent =
  | { type: "progress"; progress: LoadProgress }
  | { type: "ready"; model: LoadedModelInfo }
  | { type: "failed"; error: string };

export type FitVerdict = "fits" | "fits_with_offload" | "wont_fit";
export interface ModelMeta {
  architecture: string;
  quant: string;
  n_layers: number;
  n_experts: number;
  top_k: number;
  context_length: number;
  expert_bytes: number;
  dense_bytes: number;
}
export interface LibraryModel {
  id: string;
  name: string;
  path: string;
  files: string[];
  repo: string | null;
  source: "demo" | "download" | "imported" | "app" | "hf_cache";
  size_bytes: number;
  meta: ModelMeta | null;
  fit: { verdict: FitVerdict; reason: string } | null;
  error: string | null;
}

export interface SystemInfo {
  ram_total: number;
  ram_available: number;
  vram_total: number;
  gpu_name: string | null;
  cpus: number;
  disk_free: number;
}

export interface AppSettings {
  threads: number;
  vram_budget_gib: number | null;
  policy: string;
  prefetch: boolean;
  default_sampling: SamplingParams;
  enable_thinking: boolean;
  hf_endpoint: string;
  last_model: string | null;
  resume_downloads_on_start: boolean;
  /** Changed only through models_folder_change. */
  models_folder: string | null;
  default_backend: BackendChoice;
}
export interface SecretStorageInfo {
  kind: "keyring" | "file" | string;
  note: string;
}
export interface SettingsView {
  settings: AppSettings;
  data_folder: string;
  models_folder: string;
  policies: string[];
  /** The token is never sent in full: `hf_…WXYZ`. */
  hf_token_masked: string | null;
  secret_storage: SecretStorageInfo;
}

export interface FolderCheck {
  path: string;
  ok: boolean;
  problems: string[];
  can_move: boolean;
  move_problem: string | null;
  models_bytes: number;
  models_files: number;
  free_bytes: number | null;
  same_filesystem: boolean;
}
export interface FolderChange {
  models_folder: string;
  moved_files: number;
  moved_bytes: number;
  left_in: string | null;
}

/** The local OpenAI-compatible server (core/settings/server.rs). */
export interface ServerStatus {
  running: boolean;
  url: string | null;
  model: string | null;
  api_key_required: boolean;
}

export interface RemoteEndpoint {
  id: number;
  name: string;
  url: string;
  model: string;
  api_key_masked: string | null;
}
export interface EndpointInput {
  id: number | null;
  name: string;
  url: string;
  model: string;
  /** null keeps the saved key, "" removes it. */
  api_key: string | null;
}

export interface AppInfo {
  version: string;
  data_folder: string;
  models_folder: string;
  hf_cache: string | null;
  demo_model_id: string | null;
}

export interface HubFile {
  /** Display name (first part for split files). */
  name: string;
  files: string[];
  size: number;
  quant: string | null;
  sha256: string[];
}
export interface HubSearchHit {
  repo: string;
  downloads: number | null;
  likes: number | null;
}
export interface HubRepoListing {
  repo: string;
  revision: string;
  commit: string | null;
  files: HubFile[];
}

export type DownloadStatus = "queued" | "running" | "paused" | "verifying" | "complete" | "failed" | "cancelled";
export interface DownloadView {
  id: number;
  repo: string;
  revision: string;
  file: string;
  size: number;
  bytes_done: number;
  status: DownloadStatus;
  error: string | null;
  speed_bps: number;
  eta_s: number | null;
  /** Ordering stamp: a view with a higher `seq` describes a later state. */
  seq: number;
}

/** Errors from commands: `{ kind, message }` (see core/error.rs). */
export interface AppError {
  kind: string;
  message: string;
}

export function errorMessage(e: unknown): string {
  if (e && typeof e === "object" && "message" in e) return String((e as AppError).message);
  return String(e);
}
