//! AMX (Advanced Matrix Extensions) detection: CPU support (CPUID), OS support (XCR0
//! tile state), on Linux the per-process permission to use the tile data state
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, without which the first
//! tile instruction kills the process with SIGILL), and a probe that runs one tile
//! multiplication in a forked child and compares it with the scalar formula, so that
//! a hypervisor that advertises AMX but faults on it (llama.cpp's AMX path crashed on
//! the GPU machine's VMs) costs a child process, not this one.
//!
//! Lives in `hmoe-quant` (not the CPU backend) so that the tile kernels themselves
//! can refuse to run without it; `hmoe_cpu::amx` re-exports it. Raw `syscall`s
//! instead of libc keep the crate free of a libc dependency.

use std::sync::OnceLock;

/// Whether AMX can be used by this process, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmxStatus {
    /// Not x86-64 Linux, or CPUID does not report AMX-TILE.
    NoCpuSupport,
    /// The CPU has AMX but the OS has not enabled the tile state in XCR0.
    NotEnabledByOs,
    /// Linux refused the tile data permission (`errno` of `arch_prctl`).
    PermissionDenied(i32),
    /// The forked probe did not run a tile multiplication correctly: the child's
    /// wait status (killed by a signal: the signal number; 256 + exit code for a
    /// wrong result; negative: the errno of `fork`/`wait4`).
    ProbeFailed(i32),
    /// Usable: tiles enabled, permitted and probed; which tile arithmetic the CPU has.
    Available {
        /// AMX-INT8 (`tdpbssd` and friends).
        int8: bool,
        /// AMX-BF16 (`tdpbf16ps`).
        bf16: bool,
    },
}

impl AmxStatus {
    /// Short description for logs and benchmarks.
    pub fn describe(self) -> String {
        match self {
            AmxStatus::NoCpuSupport => "no (CPU lacks AMX-TILE, or not x86-64 Linux)".into(),
            AmxStatus::NotEnabledByOs => "no (OS has not enabled tile state in XCR0)".into(),
            AmxStatus::PermissionDenied(e) => {
                format!("no (arch_prctl XCOMP_PERM denied, errno {e})")
            }
            AmxStatus::ProbeFailed(s) if s < 0 => {
                format!("no (tile probe could not run: errno {})", -s)
            }
            AmxStatus::ProbeFailed(s) if s >= 256 => {
                format!("no (tile probe computed a wrong result, exit {})", s - 256)
            }
            AmxStatus::ProbeFailed(s) => format!("no (tile probe killed by signal {s})"),
            AmxStatus::Available { int8, bf16 } => {
                let used = if !int8 {
                    "unused (no AMX-INT8)"
                } else if amx_env_enabled() {
                    "Q8_0 prefill GEMM uses AMX-INT8"
                } else {
                    "disabled by HMOE_AMX=0"
                };
                format!("available (int8: {int8}, bf16: {bf16}), {used}")
            }
        }
    }
}

/// CPUID.(EAX=7, ECX=0):EDX bits.
#[cfg(target_arch = "x86_64")]
const AMX_BF16_BIT: u32 = 22;
#[cfg(target_arch = "x86_64")]
const AMX_TILE_BIT: u32 = 24;
#[cfg(target_arch = "x86_64")]
const AMX_INT8_BIT: u32 = 25;
/// XCR0 bits of the tile configuration and tile data state components.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const XCR0_TILE_MASK: u64 = (1 << 17) | (1 << 18);

/// The CPUID leaf-7 EDX AMX bits: (tile, int8, bf16).
pub fn amx_cpuid() -> (bool, bool, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID is always available on x86-64; leaf 7 is checked against the maximum
        // leaf first.
        let max = core::arch::x86_64::__cpuid(0).eax;
        if max < 7 {
            return (false, false, false);
        }
        let edx = core::arch::x86_64::__cpuid_count(7, 0).edx;
        let bit = |b: u32| edx & (1 << b) != 0;
        (bit(AMX_TILE_BIT), bit(AMX_INT8_BIT), bit(AMX_BF16_BIT))
    }
    #[cfg(not(target_arch = "x86_64"))]
    (false, false, false)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn os_enabled_tiles() -> bool {
    // XGETBV is only executed when OSXSAVE says the OS has enabled it.
    let osxsave = core::arch::x86_64::__cpuid(1).ecx & (1 << 27) != 0;
    if !osxsave {
        return false;
    }
    // SAFETY: OSXSAVE checked above.
    let xcr0 = unsafe { xgetbv0() };
    xcr0 & XCR0_TILE_MASK == XCR0_TILE_MASK
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller checked OSXSAVE.
    unsafe { core::arch::x86_64::_xgetbv(0) }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod linux {
    use core::arch::asm;

    /// x86-64 Linux system call numbers and codes used here.
    const SYS_FORK: usize = 57;
    const SYS_WAIT4: usize = 61;
    const SYS_KILL: usize = 62;
    const WNOHANG: usize = 1;
    const SIGKILL: usize = 9;
    const ETIMEDOUT: i32 = 110;
    /// How long the probe child may take (it needs microseconds).
    const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    const SYS_SETRLIMIT: usize = 160;
    const SYS_ARCH_PRCTL: usize = 158;
    const SYS_EXIT_GROUP: usize = 231;
    const ARCH_GET_XCOMP_PERM: usize = 0x1022;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    const RLIMIT_CORE: usize = 4;
    const EINTR: isize = 4;
    const EPERM: i32 = 1;

    /// A raw system call with up to four arguments; returns `-errno` on failure.
    ///
    /// # Safety
    /// The arguments must be valid for system call `n` (pointers to live memory).
    unsafe fn syscall4(n: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> isize {
        let ret: isize;
        // SAFETY: the x86-64 Linux syscall ABI: rax = number and result, rdi/rsi/rdx/
        // r10 = arguments, rcx and r11 clobbered by the instruction.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a1,
                in("rsi") a2,
                in("rdx") a3,
                in("r10") a4,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            );
        }
        ret
    }

    /// Requests the tile data permission for this process (all its threads).
    pub(super) fn request_permission() -> Result<(), i32> {
        // SAFETY: integer arguments, then a pointer to a live local u64.
        unsafe {
            let r = syscall4(
                SYS_ARCH_PRCTL,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
                0,
                0,
            );
            if r < 0 {
                return Err(-r as i32);
            }
            let mut mask: u64 = 0;
            let r = syscall4(
                SYS_ARCH_PRCTL,
                ARCH_GET_XCOMP_PERM,
                &mut mask as *mut u64 as usize,
                0,
                0,
            );
            if r < 0 {
                return Err(-r as i32);
            }
            if mask & (1 << XFEATURE_XTILEDATA) == 0 {
                return Err(EPERM);
            }
        }
        Ok(())
    }

    /// Runs `probe` in a forked child; `Ok` when it exited with status 0, otherwise
    /// the [`super::AmxStatus::ProbeFailed`] code.
    ///
    /// The child runs only `probe` (stack memory and tile instructions, no locks, no
    /// allocation, no libc) and leaves through `exit_group`, so forking a
    /// multi-threaded process is safe here. Core dumps are switched off in the child
    /// first: a SIGILL there is an expected outcome, not a crash to keep.
    pub(super) fn in_child(probe: fn() -> bool) -> Result<(), i32> {
        // SAFETY: fork takes no arguments; see above for what the child does.
        let pid = unsafe { syscall4(SYS_FORK, 0, 0, 0, 0) };
        if pid < 0 {
            return Err(pid as i32);
        }
        if pid == 0 {
            let zero = [0u64; 2];
            // SAFETY: setrlimit reads a live 16-byte rlimit; exit_group never returns.
            unsafe {
                syscall4(SYS_SETRLIMIT, RLIMIT_CORE, zero.as_ptr() as usize, 0, 0);
                let code = if probe() { 0 } else { 1 };
                syscall4(SYS_EXIT_GROUP, code, 0, 0, 0);
            }
            // exit_group does not return; stop here in any case.
            loop {
                core::hint::spin_loop();
            }
        }
        // Polled with WNOHANG and a deadline: a child that hangs (it cannot, short of
        // a hypervisor stalling it) must not hang the engine; it is killed instead.
        let mut status: i32 = 0;
        let deadline = std::time::Instant::now() + PROBE_TIMEOUT;
        loop {
            // SAFETY: wait4 writes one i32 into a live local.
            let r = unsafe {
                syscall4(
                    SYS_WAIT4,
                    pid as usize,
                    &mut status as *mut i32 as usize,
                    WNOHANG,
                    0,
                )
            };
            if r == -EINTR || (r == 0 && std::time::Instant::now() < deadline) {
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            if r == 0 {
                // SAFETY: kill and a blocking wait4 on our own child.
                unsafe {
                    syscall4(SYS_KILL, pid as usize, SIGKILL, 0, 0);
                    syscall4(
                        SYS_WAIT4,
                        pid as usize,
                        &mut status as *mut i32 as usize,
                        0,
                        0,
                    );
                }
                return Err(-ETIMEDOUT);
            }
            if r < 0 {
                return Err(r as i32);
            }
            break;
        }
        let signal = status & 0x7f;
        let code = (status >> 8) & 0xff;
        match (signal, code) {
            (0, 0) => Ok(()),
            (0, c) => Err(256 + c),
            (s, _) => Err(s),
        }
    }
}

fn detect() -> AmxStatus {
    let (tile, int8, bf16) = amx_cpuid();
    if !tile {
        return AmxStatus::NoCpuSupport;
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        if !os_enabled_tiles() {
            return AmxStatus::NotEnabledByOs;
        }
        if let Err(e) = linux::request_permission() {
            return AmxStatus::PermissionDenied(e);
        }
        // The probe needs AVX-512 for nothing, but the kernels do: a CPU with AMX
        // always has it; without it, treat AMX as unusable rather than probe.
        if !int8 || !super::Isa::Avx512.is_available() {
            return AmxStatus::Available { int8: false, bf16 };
        }
        if let Err(s) = linux::in_child(super::amx_tiles::probe) {
            return AmxStatus::ProbeFailed(s);
        }
        AmxStatus::Available { int8, bf16 }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        // Tile permission handling exists only for Linux here; elsewhere stay off.
        let _ = (int8, bf16);
        AmxStatus::NoCpuSupport
    }
}

/// AMX status of this process, detected once: on Linux the first call requests the
/// tile data permission and forks one short-lived child to probe the tile unit.
pub fn amx_status() -> AmxStatus {
    static STATUS: OnceLock<AmxStatus> = OnceLock::new();
    *STATUS.get_or_init(detect)
}

/// `false` when the environment variable `HMOE_AMX` is `0` (or `off`/`false`): the
/// user's escape hatch from the AMX kernels. Read once.
pub fn amx_env_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("HMOE_AMX") {
        Ok(v) => !matches!(v.trim(), "0" | "off" | "false"),
        Err(_) => true,
    })
}

/// Whether the AMX-INT8 kernels may run: [`amx_status`] is available with INT8 and
/// `HMOE_AMX` does not switch them off. Every path to a tile instruction checks it.
pub fn amx_int8_usable() -> bool {
    amx_env_enabled() && matches!(amx_status(), AmxStatus::Available { int8: true, .. })
}

/// The forked-probe machinery, exercised without AMX: a probe that passes, one that
/// computes a wrong result and one that dies of SIGILL (what a hypervisor that
/// advertises AMX but does not allow it would do) must each be reported, and the
/// parent must survive.
#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    use super::linux::in_child;

    fn passes() -> bool {
        true
    }
    fn wrong() -> bool {
        false
    }
    fn illegal() -> bool {
        // SAFETY: ud2 raises SIGILL, which kills the (forked) child process only.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        true
    }

    #[test]
    fn probe_child_outcomes_are_reported() {
        assert_eq!(in_child(passes), Ok(()));
        assert_eq!(in_child(wrong), Err(256 + 1));
        assert_eq!(in_child(illegal), Err(4), "SIGILL in the child");
        // The parent is unharmed and can probe again.
        assert_eq!(in_child(passes), Ok(()));
    }
}
