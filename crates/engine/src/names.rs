//! Container IDs and names: 64 random hex digits, Docker's name rule, and generated names.

use berth_api::{ApiError, Kind};

pub fn random_id() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: getrandom writes at most the given length into the buffer it is given.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        match n {
            n if n > 0 => filled += n as usize,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(ApiError::new(Kind::Internal, format!("getrandom: {e}")));
                }
            }
        }
    }
    Ok(hex::encode(b))
}

/// Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, with an optional leading '/'.
pub fn validate(name: &str) -> Result<String, ApiError> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let mut chars = n.chars();
    let ok = n.len() >= 2
        && n.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(n.to_string())
    } else {
        Err(ApiError::new(Kind::InvalidArgument, format!("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")))
    }
}

const LEFT: [&str; 24] = [
    "brave", "calm", "clever", "eager", "fond", "gentle", "happy", "jolly", "keen", "kind", "lucid", "merry", "modest", "nifty", "proud",
    "quiet", "quick", "sharp", "steady", "sunny", "swift", "tender", "vivid", "witty",
];
const RIGHT: [&str; 24] = [
    "anchor", "beacon", "bollard", "buoy", "capstan", "cleat", "compass", "current", "dinghy", "ferry", "galley", "harbor", "hull",
    "jetty", "keel", "lantern", "mooring", "pier", "quay", "rudder", "sextant", "skiff", "tide", "wharf",
];

/// `adjective_noun`, with a number after it on a retry, like Docker's generator.
pub fn generate(seed: &str, attempt: u32) -> String {
    let n = u64::from_str_radix(&seed[..seed.len().min(12)], 16).unwrap_or(0);
    let base = format!("{}_{}", LEFT[(n % 24) as usize], RIGHT[((n / 24) % 24) as usize]);
    if attempt == 0 { base } else { format!("{base}{attempt}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        assert_eq!(validate("/web-1").unwrap(), "web-1");
        assert_eq!(validate("a.b_c").unwrap(), "a.b_c");
        for bad in ["", "a", "-x", "_x", "a b", "a/b", "ü1"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        let id = random_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(validate(&generate(&id, 0)).is_ok());
        assert_ne!(generate(&id, 0), generate(&id, 1));
    }
}
