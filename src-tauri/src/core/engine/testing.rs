//! Test double for the engine: replays a script of text pieces at a set pace and honours
//! cancel, so streaming, stop and persistence can be tested without model weights.
//! (Tests that need real generation use the demo model through the real adapter.)

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmoe_engine::api::{
    EngineOptions, FinishReason, GenerationEvent, GenerationStats, LoadProgress, LoadStage, Prompt,
    RuntimeOptions, SamplingParams,
};

use super::models::{GenStream, LoadedModelInfo};
use super::service::{LoadFuture, LoadedModel, ModelLoader, ProgressFn};

/// Replays `pieces` one per `pace`.
pub struct ScriptedModel {
    /// Text pieces (one token each).
    pub pieces: Vec<String>,
    /// Delay between pieces.
    pub pace: Duration,
    /// Every prompt seen (shared with the loader that made this model).
    pub prompts: Prompts,
}

impl LoadedModel for ScriptedModel {
    fn info(&self) -> LoadedModelInfo {
        LoadedModelInfo {
            path: "/scripted.gguf".into(),
            name: "scripted".into(),
            architecture: "qwen3moe".into(),
            quant: "q8_0".into(),
            context_length: 4096,
        }
    }

    fn generate(&self, prompt: Prompt, params: SamplingParams) -> Result<GenStream, String> {
        self.prompts.lock().map_err(|e| e.to_string())?.push(prompt);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let cancelled = Arc::new(AtomicBool::new(false));
        let c = cancelled.clone();
        let pieces: Vec<String> = self
            .pieces
            .iter()
            .take(params.max_tokens)
            .cloned()
            .collect();
        let pace = self.pace;
        tokio::spawn(async move {
            let mut n = 0;
            let mut reason = FinishReason::Stop;
            for (i, p) in pieces.into_iter().enumerate() {
                if c.load(Ordering::Relaxed) {
                    reason = FinishReason::Cancelled;
                    break;
                }
                tokio::time::sleep(pace).await;
                if tx
                    .send(GenerationEvent::Text {
                        text: p,
                        tokens: vec![i as u32],
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                n += 1;
            }
            let stats = GenerationStats {
                prompt_tokens: 3,
                completion_tokens: n,
                ..Default::default()
            };
            let _ = tx
                .send(GenerationEvent::Done {
                    finish_reason: reason,
                    stats,
                })
                .await;
        });
        Ok(GenStream {
            events: rx,
            cancel: Box::new(move || cancelled.store(true, Ordering::Relaxed)),
        })
    }

    fn set_runtime_options(&self, _opts: RuntimeOptions) -> Result<(), String> {
        Ok(())
    }
}

/// Prompts recorded by scripted models.
pub type Prompts = Arc<std::sync::Mutex<Vec<Prompt>>>;

/// Loader that "loads" a [`ScriptedModel`] (or fails for paths containing "broken").
#[derive(Default)]
pub struct ScriptedLoader {
    /// Prompts seen by the models this loader made.
    pub prompts: Prompts,
    /// Pieces every model replays.
    pub pieces: Vec<String>,
    /// Pace.
    pub pace: Duration,
}

impl ModelLoader for ScriptedLoader {
    fn load(&self, path: PathBuf, _opts: EngineOptions, progress: ProgressFn) -> LoadFuture {
        let (pieces, pace, prompts) = (self.pieces.clone(), self.pace, self.prompts.clone());
        Box::pin(async move {
            progress(LoadProgress {
                stage: LoadStage::Opening,
                done: 0,
                total: 1,
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            if path.to_string_lossy().contains("broken") {
                return Err(format!("{} is not a GGUF file", path.display()));
            }
            progress(LoadProgress {
                stage: LoadStage::Ready,
                done: 1,
                total: 1,
            });
            Ok(Arc::new(ScriptedModel {
                pieces,
                pace,
                prompts,
            }) as Arc<dyn LoadedModel>)
        })
    }
}

/// Words "w0 w1 …" as pieces.
pub fn words(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i} ")).collect()
}
