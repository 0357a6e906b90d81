//! The CPU expert executor: `hmoe-cpu`'s fused, quantised kernels on a persistent
//! pool sized to the physical cores.

use crate::error::{EngineError, Result};
use crate::moe::{ExpertExecutor, LayerExperts, WorkItem};
use hmoe_cpu::{run_experts_beside, CpuPool, ExpertScratch, ExpertTask, MatView};
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
        self.execute_beside(experts, x, hidden, items, out, &mut || {})
    }

    fn execute_beside(
        &self,
        experts: &LayerExperts<'_>,
        x: &[f32],
        hidden: usize,
        items: &[WorkItem],
        out: &mut [f32],
        beside: &mut dyn FnMut(),
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
        run_experts_beside(&self.pool, x, hidden, &tasks, out, &mut scratch, beside).map_err(|e| {
            EngineError::Compute(format!("CPU experts (layer {}): {e}", experts.layer))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::dense_exec::testing::tiny_model;

    /// `execute_beside` computes what `execute` does and runs `beside` exactly once, on
    /// the calling thread, with one thread or several.
    #[test]
    fn execute_beside_matches_execute_and_runs_beside_once_on_the_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = tiny_model(dir.path(), "q4_k_m");
        let h = model.cfg.hidden;
        let experts = model.layer_experts(0);
        let rows = 24;
        let x: Vec<f32> = (0..rows * h)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 60.0)
            .collect();
        // Three experts, each on every other row (two start on even rows, one on odd).
        let items: Vec<WorkItem> = (0..3u16)
            .map(|e| {
                let rows: Vec<u32> = (u32::from(e % 2)..rows as u32).step_by(2).collect();
                let weights = vec![0.3; rows.len()];
                WorkItem {
                    expert: e,
                    rows,
                    weights,
                }
            })
            .collect();
        for threads in [1, 3] {
            let exe = CpuExecutor::new(CpuExecutor::pool(threads).expect("pool"));
            let mut want = vec![0f32; rows * h];
            exe.execute(&experts, &x, h, &items, &mut want)
                .expect("execute");
            let mut got = vec![0f32; rows * h];
            let caller = std::thread::current().id();
            let mut calls = 0;
            exe.execute_beside(&experts, &x, h, &items, &mut got, &mut || {
                assert_eq!(std::thread::current().id(), caller);
                calls += 1;
            })
            .expect("execute_beside");
            assert_eq!(calls, 1, "{threads} threads");
            assert_eq!(got, want, "{threads} threads");
            assert!(want.iter().any(|&v| v != 0.0));
        }
    }
}
