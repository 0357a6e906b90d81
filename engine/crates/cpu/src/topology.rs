//! Which logical CPUs are distinct physical cores (Linux sysfs), and pinning.

use std::collections::BTreeSet;
use std::sync::OnceLock;

/// The logical CPUs this process may run on, read once (at the first call) so that
/// pinning a thread later does not shrink what the pool sees: threads inherit
/// their creator's affinity, and a pinned caller would otherwise confine every
/// new worker to its one core.
pub fn allowed_cpus() -> &'static [usize] {
    static ALLOWED: OnceLock<Vec<usize>> = OnceLock::new();
    ALLOWED.get_or_init(read_allowed_cpus)
}

/// The logical CPUs this process may run on, one per physical core (the first
/// hyper-thread sibling of each core), read once like [`allowed_cpus`]. Falls back
/// to `0..available_parallelism` when sysfs or the affinity mask cannot be read.
pub fn physical_core_cpus() -> Vec<usize> {
    static CORES: OnceLock<Vec<usize>> = OnceLock::new();
    CORES.get_or_init(read_physical_core_cpus).clone()
}

fn read_physical_core_cpus() -> Vec<usize> {
    let allowed = allowed_cpus();
    let mut seen = BTreeSet::new();
    let mut cpus = Vec::new();
    for &cpu in allowed {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        let read = |f: &str| {
            std::fs::read_to_string(format!("{base}/{f}"))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
        };
        match (read("physical_package_id"), read("core_id")) {
            (Some(pkg), Some(core)) => {
                if seen.insert((pkg, core)) {
                    cpus.push(cpu);
                }
            }
            _ => cpus.push(cpu),
        }
    }
    if cpus.is_empty() {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        cpus = (0..n).collect();
    }
    cpus
}

/// Number of physical cores available to this process (at least 1).
pub fn physical_cores() -> usize {
    physical_core_cpus().len().max(1)
}

#[cfg(target_os = "linux")]
fn read_allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

#[cfg(not(target_os = "linux"))]
fn read_allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// Pins the calling thread to logical CPU `cpu`; false when the OS refuses.
pub fn pin_current_thread(cpu: usize) -> bool {
    set_affinity(&[cpu])
}

/// Lets the calling thread run on every CPU of [`allowed_cpus`] again (undoes an
/// affinity inherited from a pinned creator).
pub fn unpin_current_thread() -> bool {
    set_affinity(allowed_cpus())
}

#[cfg(target_os = "linux")]
fn set_affinity(cpus: &[usize]) -> bool {
    if cpus.is_empty() || cpus.iter().any(|&c| c >= libc::CPU_SETSIZE as usize) {
        return false;
    }
    // SAFETY: cpu_set_t is plain data and every index is below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Affinity is left alone outside Linux.
#[cfg(not(target_os = "linux"))]
fn set_affinity(_cpus: &[usize]) -> bool {
    false
}

/// CPU time consumed by this process so far (all threads, user + system), in seconds;
/// 0 if the clock cannot be read. Benchmarks on shared machines compare CPU time,
/// which other processes competing for the cores do not inflate.
pub fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_does_not_shrink_the_core_list() {
        let before = physical_core_cpus();
        let t = std::thread::spawn(move || {
            if pin_current_thread(before[0]) {
                assert_eq!(physical_core_cpus(), before);
                assert!(unpin_current_thread());
            }
        });
        assert!(t.join().is_ok());
    }

    #[test]
    fn core_list_is_nonempty_and_distinct() {
        let cpus = physical_core_cpus();
        assert!(!cpus.is_empty());
        let set: BTreeSet<_> = cpus.iter().collect();
        assert_eq!(set.len(), cpus.len());
        assert!(
            cpus.len()
                <= std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(usize::MAX)
        );
    }
}
