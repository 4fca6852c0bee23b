//! Facts about the current process and boot, read once at region creation (never on the hot
//! path). Every read has a harmless fallback: a region is still created without them.

use std::fs;

/// Identity and description of the current process.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProcessInfo {
    pub pid: u32,
    pub uid: u32,
    pub start_time: u64,
    pub boot_id: [u8; 16],
    pub exe: String,
    pub cmdline: String,
}

impl ProcessInfo {
    /// The current process's facts, read once per pid (a forked child reads its own).
    pub(crate) fn current() -> Self {
        static CACHE: std::sync::Mutex<Option<ProcessInfo>> = std::sync::Mutex::new(None);
        let pid = std::process::id();
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        match cache.as_ref() {
            Some(info) if info.pid == pid => info.clone(),
            _ => {
                let info = Self::read(pid);
                *cache = Some(info.clone());
                info
            }
        }
    }

    fn read(pid: u32) -> Self {
        ProcessInfo {
            pid,
            // SAFETY: getuid has no preconditions and cannot fail.
            uid: unsafe { libc::getuid() },
            start_time: start_time_of("self").unwrap_or(0),
            boot_id: cached_boot_id(),
            exe: exe_name(),
            cmdline: cmdline(),
        }
    }
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
pub(crate) fn start_time_of(pid: &str) -> Option<u64> {
    ttmem_region::identity::parse_start_time(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `/proc/sys/kernel/random/boot_id` as 16 bytes.
pub(crate) fn boot_id() -> Option<[u8; 16]> {
    ttmem_region::identity::parse_boot_id(&fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?)
}

/// The boot id, read once per process (it cannot change while we run).
fn cached_boot_id() -> [u8; 16] {
    static BOOT: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| boot_id().unwrap_or([0; 16]))
}

/// The executable's file name from argv[0] (std holds argv already, also in a C host, so this
/// makes no system call), else `/proc/self/comm`.
fn exe_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|n| !n.is_empty())
        .or_else(|| fs::read_to_string("/proc/self/comm").ok().map(|s| s.trim().to_owned()))
        .unwrap_or_default()
}

/// The command line from argv, else `/proc/self/cmdline`.
fn cmdline() -> String {
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    if !args.is_empty() {
        return args.join(" ");
    }
    match fs::read("/proc/self/cmdline") {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .replace('\0', " "),
        Err(_) => String::new(),
    }
}

/// The calling thread's OS id.
pub(crate) fn thread_id() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    (unsafe { libc::gettid() }) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_described() {
        let p = ProcessInfo::current();
        assert_eq!(p.pid, std::process::id());
        assert!(p.start_time > 0, "start time should parse from /proc/self/stat");
        assert_ne!(p.boot_id, [0; 16]);
        assert!(!p.cmdline.is_empty());
    }
}
