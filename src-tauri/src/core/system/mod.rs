//! Facts about this machine: RAM, VRAM, CPUs, free disk space.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the library and downloads need to know about the machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SystemInfo {
    /// Total RAM in bytes.
    pub ram_total: u64,
    /// RAM available now in bytes.
    pub ram_available: u64,
    /// Total VRAM of the first GPU in bytes (0 = no GPU found).
    pub vram_total: u64,
    /// GPU name, if any.
    pub gpu_name: Option<String>,
    /// Logical CPUs.
    pub cpus: usize,
    /// Free bytes where the models are stored.
    pub disk_free: u64,
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// RAM (total, available) from /proc/meminfo; zeros where it cannot be read.
pub fn ram() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo_kib(&text, "MemTotal:").unwrap_or(0) * 1024;
    let avail = meminfo_kib(&text, "MemAvailable:").unwrap_or(0) * 1024;
    (total, avail)
}

/// First NVIDIA GPU (name, bytes) through `nvidia-smi`; None without one (no CUDA needed).
pub fn gpu() -> Option<(String, u64)> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    let (name, mib) = line.rsplit_once(',')?;
    Some((
        name.trim().to_string(),
        mib.trim().parse::<u64>().ok()? * 1024 * 1024,
    ))
}

/// Free bytes on the file system that holds `path` (or its nearest existing parent).
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no existing parent folder",
            ));
        }
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Collects everything (the `nvidia-smi` call can take a moment: call off the UI thread).
pub fn collect(models_dir: &Path) -> SystemInfo {
    let (ram_total, ram_available) = ram();
    let g = gpu();
    SystemInfo {
        ram_total,
        ram_available,
        vram_total: g.as_ref().map(|g| g.1).unwrap_or(0),
        gpu_name: g.map(|g| g.0),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        disk_free: free_space(models_dir).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parses_kib_lines() {
        let t = "MemTotal:       24576000 kB\nMemFree: 100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_kib(t, "MemTotal:"), Some(24_576_000));
        assert_eq!(meminfo_kib(t, "MemAvailable:"), Some(20_000_000));
        assert_eq!(meminfo_kib(t, "Nope:"), None);
    }

    #[test]
    fn free_space_of_a_missing_folder_uses_its_parent() {
        let d = tempfile::tempdir().unwrap();
        let free = free_space(&d.path().join("a/b/c")).unwrap();
        assert!(free > 0);
    }
}
