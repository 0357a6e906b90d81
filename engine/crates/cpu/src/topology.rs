//! Which logical CPUs are distinct physical cores (Linux sysfs), and pinning.

use std::collections::BTreeSet;

/// The logical CPUs this process may run on, one per physical core (the first
/// hyper-thread sibling of each core). Falls back to `0..available_parallelism`
/// when sysfs or the affinity mask cannot be read.
pub fn physical_core_cpus() -> Vec<usize> {
    let allowed = allowed_cpus();
    let mut seen = BTreeSet::new();
    let mut cpus = Vec::new();
    for &cpu in &allowed {
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
fn allowed_cpus() -> Vec<usize> {
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
fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// Pins the calling thread to logical CPU `cpu`; false when the OS refuses.
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpu: usize) -> bool {
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: as above; the set names one CPU of the allowed range.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Pinning is a no-op outside Linux.
#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(_cpu: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

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
