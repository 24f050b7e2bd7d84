//! `/proc/<pid>/oom_score_adj`: how readily the OOM killer picks a process.
//! Per process (the whole thread group shares it); children inherit it.

use std::path::PathBuf;

pub fn path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/oom_score_adj"))
}

/// Write `adj` (-1000..=1000). Lowering it below the value the process
/// had needs CAP_SYS_RESOURCE.
pub fn set(pid: u32, adj: i16) -> std::io::Result<()> {
    std::fs::write(path(pid), adj.to_string())
}

/// The current value.
pub fn get(pid: u32) -> std::io::Result<i16> {
    let text = std::fs::read_to_string(path(pid))?;
    text.trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path(pid).display())))
}
