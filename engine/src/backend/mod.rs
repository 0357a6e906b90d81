//! Expert executors per device. The CPU one wraps `hmoe-cpu`'s fused kernels.

pub mod cpu;
