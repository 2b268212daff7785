//! Which process owns work in flight (an unpack's snapshot, an import's or a load's ingest): its
//! name carries `<pid>.<start time>` (field 22 of /proc/PID/stat), so after a crash the work is
//! known to be abandoned even when another process has since been given the same pid.

use std::sync::OnceLock;

/// This process, as in-flight names carry it.
pub(crate) fn me() -> &'static str {
    static ME: OnceLock<String> = OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id() as i32;
        format!("{pid}.{}", start_time(pid).unwrap_or(0))
    })
}

/// A process's start time in clock ticks since boot; None when there is no such process.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// For a name `<prefix><pid>.<start>-…` (or the older `<prefix><pid>-…`): is its owner alive?
/// None when the name is not of that form.
pub(crate) fn alive(name: &str, prefix: &str) -> Option<bool> {
    let owner = name.strip_prefix(prefix)?.split('-').next()?;
    let (pid, start) = match owner.split_once('.') {
        Some((p, s)) => (p.parse::<i32>().ok()?, Some(s.parse::<u64>().ok()?)),
        None => (owner.parse::<i32>().ok()?, None),
    };
    let now = start_time(pid);
    Some(match start {
        Some(s) => now == Some(s),
        None => now.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_told_apart_by_start_time() {
        assert_eq!(alive(&format!("extract-{}-abc", me()), "extract-"), Some(true));
        let pid = std::process::id();
        // Our pid with another start time: a process that had our pid before us.
        let start: u64 = me().split_once('.').unwrap().1.parse().unwrap();
        assert_eq!(alive(&format!("extract-{pid}.{}-abc", start + 1), "extract-"), Some(false));
        assert_eq!(alive(&format!("load-{pid}-7"), "load-"), Some(true), "older names: the pid alone");
        assert_eq!(alive("load-999999999.5-7", "load-"), Some(false));
        assert_eq!(alive("blob-sha256:abc", "load-"), None);
        assert_eq!(alive("extract-x-abc", "extract-"), None);
    }
}
