//! OCI hooks: run a program with the container's state on stdin, within its timeout.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};

/// Run `hooks` in order; the first failure stops the rest.
pub fn run(hooks: &[Hook], state_json: &[u8]) -> Result<()> {
    for h in hooks {
        run_one(h, state_json)?;
    }
    Ok(())
}

fn run_one(h: &Hook, state_json: &[u8]) -> Result<()> {
    let fail = |reason: String| Error::Hook { path: h.path().clone(), reason };
    let args = h.args().clone().unwrap_or_default();
    let mut cmd = Command::new(h.path());
    if let Some((argv0, rest)) = args.split_first() {
        use std::os::unix::process::CommandExt;
        cmd.arg0(argv0).args(rest);
    }
    // As runc (Go's exec.Cmd): a hook without `env` inherits the runtime's environment; one
    // with `env`, even empty, gets exactly that.
    if let Some(env) = h.env() {
        cmd.env_clear();
        for kv in env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
    }
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| fail(format!("cannot start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that ignores its stdin may close it early; that is not a failure.
        let _ = stdin.write_all(state_json);
    }
    let deadline = h.timeout().map(|t| Instant::now() + Duration::from_secs(t.max(1) as u64));
    loop {
        match child.try_wait().map_err(|e| fail(e.to_string()))? {
            Some(status) => {
                let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
                if status.success() {
                    return Ok(());
                }
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(fail(format!("{status}: {}", stderr.trim())));
            }
            None if deadline.is_some_and(|d| Instant::now() > d) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("timed out after {}s", h.timeout().unwrap_or_default())));
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn passes_state_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let h = hook(serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", out.display())]}));
        run(&[h], b"{\"id\":\"x\"}").unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "{\"id\":\"x\"}");
    }

    #[test]
    fn failure_and_timeout_are_reported() {
        let h = hook(serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 3"]}));
        let err = run(&[h], b"{}").unwrap_err().to_string();
        assert!(err.contains("broken") && err.contains("/bin/sh"), "{err}");
        let h = hook(serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", "sleep 5"], "timeout": 1}));
        assert!(run(&[h], b"{}").unwrap_err().to_string().contains("timed out"));
    }
}
