//! The CPU expert executor: `hmoe-cpu`'s fused, quantised kernels on a persistent
//! pool sized to the physical cores.

use crate::error::{EngineError, Result};
use crate::moe::{ExpertExecutor, LayerExperts, WorkItem};
use hmoe_cpu::{run_experts, CpuPool, ExpertScratch, ExpertTask, MatView};
use std::sync::{Arc, Mutex};

/// Fused CPU executor.
pub struct CpuExecutor {
    pool: Arc<CpuPool>,
    scratch: Mutex<ExpertScratch>,
}

impl CpuExecutor {
    /// An executor on `pool`.
    pub fn new(pool: Arc<CpuPool>) -> Self {
        Self {
            pool,
            scratch: Mutex::new(ExpertScratch::new()),
        }
    }

    /// A pool of `threads` workers (0 = one per physical core).
    pub fn pool(threads: usize) -> Result<Arc<CpuPool>> {
        let pool = if threads == 0 {
            CpuPool::new_default()
        } else {
            CpuPool::with_threads(threads)
        }
        .map_err(|e| EngineError::Compute(format!("CPU thread pool: {e}")))?;
        Ok(Arc::new(pool))
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }
}

fn view(m: crate::moe::MatView<'_>) -> MatView<'_> {
    MatView {
        dtype: m.dtype,
        rows: m.rows,
        cols: m.cols,
        data: m.data,
    }
}

impl ExpertExecutor for CpuExecutor {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn execute(
        &self,
        experts: &LayerExperts<'_>,
        x: &[f32],
        hidden: usize,
        items: &[WorkItem],
        out: &mut [f32],
    ) -> Result<()> {
        let tasks: Vec<ExpertTask<'_>> = items
            .iter()
            .map(|it| {
                let v = experts.expert(it.expert as usize);
                ExpertTask {
                    gate: view(v.gate),
                    up: view(v.up),
                    down: view(v.down),
                    token_rows: &it.rows,
                    weights: &it.weights,
                }
            })
            .collect();
        let mut scratch = self
            .scratch
            .lock()
            .map_err(|_| EngineError::Compute("CPU expert scratch poisoned".into()))?;
        run_experts(&self.pool, x, hidden, &tasks, out, &mut scratch).map_err(|e| {
            EngineError::Compute(format!("CPU experts (layer {}): {e}", experts.layer))
        })
    }
}
