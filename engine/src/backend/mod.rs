//! Executors per device. The CPU ones wrap `hmoe-cpu`'s pool and `hmoe-quant`'s kernels.

pub mod cpu;
pub mod cuda;
pub mod dense;
