//! AMX (Advanced Matrix Extensions) detection: CPU support (CPUID), OS support (XCR0
//! tile state) and, on Linux, the per-process permission to use the tile data state
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), which must be granted
//! before the first tile instruction or the process is killed with SIGILL.
//!
//! Detection only: no kernel uses AMX yet (none could be tested: the build machine
//! has no AMX, and llama.cpp's AMX path crashed on the GPU machine's VMs). A future
//! tile kernel must check [`amx_status`] and fall back on anything but
//! [`AmxStatus::Available`].

use std::sync::OnceLock;

/// Whether AMX can be used by this process, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmxStatus {
    /// Not x86-64, or CPUID does not report AMX-TILE.
    NoCpuSupport,
    /// The CPU has AMX but the OS has not enabled the tile state in XCR0.
    NotEnabledByOs,
    /// Linux refused the tile data permission (`errno` of `arch_prctl`).
    PermissionDenied(i32),
    /// Usable: tiles enabled and permitted; which tile arithmetic the CPU has.
    Available {
        /// AMX-INT8 (`tdpbusd` and friends).
        int8: bool,
        /// AMX-BF16 (`tdpbf16ps`).
        bf16: bool,
    },
}

impl AmxStatus {
    /// Short description for logs and benchmarks.
    pub fn describe(self) -> String {
        match self {
            AmxStatus::NoCpuSupport => "no (CPU lacks AMX-TILE)".into(),
            AmxStatus::NotEnabledByOs => "no (OS has not enabled tile state in XCR0)".into(),
            AmxStatus::PermissionDenied(e) => {
                format!("no (arch_prctl XCOMP_PERM denied, errno {e})")
            }
            AmxStatus::Available { int8, bf16 } => {
                format!("available (int8: {int8}, bf16: {bf16}), unused")
            }
        }
    }
}

/// CPUID.(EAX=7, ECX=0):EDX bits.
const AMX_BF16_BIT: u32 = 22;
const AMX_TILE_BIT: u32 = 24;
const AMX_INT8_BIT: u32 = 25;
/// XCR0 bits of the tile configuration and tile data state components.
const XCR0_TILE_MASK: u64 = (1 << 17) | (1 << 18);
/// Linux `arch_prctl` codes and the tile data state component.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const XFEATURE_XTILEDATA: libc::c_long = 18;

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

#[cfg(target_arch = "x86_64")]
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller checked OSXSAVE.
    unsafe { core::arch::x86_64::_xgetbv(0) }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_permission() -> Result<(), i32> {
    // SAFETY: plain syscalls with integer arguments and a pointer to a local u64.
    unsafe {
        if libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) != 0
        {
            return Err(*libc::__errno_location());
        }
        let mut mask: u64 = 0;
        if libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_PERM,
            &mut mask as *mut u64,
        ) != 0
        {
            return Err(*libc::__errno_location());
        }
        if mask & (1 << XFEATURE_XTILEDATA) == 0 {
            return Err(libc::EPERM);
        }
    }
    Ok(())
}

fn detect() -> AmxStatus {
    let (tile, int8, bf16) = amx_cpuid();
    if !tile {
        return AmxStatus::NoCpuSupport;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if !os_enabled_tiles() {
            return AmxStatus::NotEnabledByOs;
        }
        #[cfg(target_os = "linux")]
        if let Err(e) = request_permission() {
            return AmxStatus::PermissionDenied(e);
        }
        AmxStatus::Available { int8, bf16 }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (int8, bf16);
        AmxStatus::NoCpuSupport
    }
}

/// AMX status of this process (detected once; on Linux the first call requests the
/// tile data permission).
pub fn amx_status() -> AmxStatus {
    static STATUS: OnceLock<AmxStatus> = OnceLock::new();
    *STATUS.get_or_init(detect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_agrees_with_cpuid() {
        let (tile, int8, bf16) = amx_cpuid();
        let s = amx_status();
        eprintln!("AMX: {}", s.describe());
        match s {
            AmxStatus::NoCpuSupport => assert!(!tile),
            AmxStatus::Available { int8: i, bf16: b } => {
                assert!(tile);
                assert_eq!((i, b), (int8, bf16));
            }
            AmxStatus::NotEnabledByOs | AmxStatus::PermissionDenied(_) => assert!(tile),
        }
        // Detected once: a second call gives the same answer.
        assert_eq!(amx_status(), s);
    }
}
