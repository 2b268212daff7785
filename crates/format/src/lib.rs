//! Docker's human formats, written once for the berth CLI and the engine (which must agree):
//! "Up 5 minutes" durations, `10m`-style sizes, and `--detach-keys` sequences.

/// A size that is not a number with an optional `b`, `k`, `m` or `g` suffix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size: {0:?}")]
pub struct InvalidSize(pub String);

/// Docker's `HumanDuration` of a number of seconds ("Less than a second", "About a minute",
/// "3 hours", "2 weeks").
pub fn human_duration(secs: u64) -> String {
    let s = secs;
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".into(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if d < 14 => format!("{d} days"),
        _ if d < 60 => format!("{} weeks", d / 7),
        _ if d < 730 => format!("{} months", d / 30),
        _ => format!("{} years", d / 365),
    }
}

/// `10m`, `1g`, `512k`, `1.5m`, `100` (bytes): sizes as `--shm-size` and `--log-opt max-size`
/// take them (binary multiples, case-insensitive, an optional trailing `b`).
pub fn parse_size(s: &str) -> Result<u64, InvalidSize> {
    let bad = || InvalidSize(s.to_string());
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if !n.is_finite() || n < 0.0 || n * mult as f64 > u64::MAX as f64 {
        return Err(bad());
    }
    Ok((n * mult as f64) as u64)
}

/// Docker's `--detach-keys` format (`ctrl-p,ctrl-q`, `a`, `ctrl-@`…) as the bytes to watch for;
/// ctrl-p ctrl-q when unset or not understood.
pub fn detach_keys(spec: Option<&str>) -> Vec<u8> {
    const DEFAULT: [u8; 2] = [16, 17];
    let mut out = Vec::new();
    for k in spec.unwrap_or("ctrl-p,ctrl-q").split(',') {
        let k = k.trim();
        if let Some(c) = k.strip_prefix("ctrl-") {
            match c.as_bytes() {
                [b] if b.is_ascii_alphabetic() => out.push(b.to_ascii_lowercase() - b'a' + 1),
                [b'@'] => out.push(0),
                [b'['] => out.push(27),
                [b'\\'] => out.push(28),
                [b']'] => out.push(29),
                [b'^'] => out.push(30),
                [b'_'] => out.push(31),
                _ => return DEFAULT.to_vec(),
            }
        } else if k.len() == 1 {
            out.push(k.as_bytes()[0]);
        } else {
            return DEFAULT.to_vec();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_dockers() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(800 * 86400), "2 years");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("200"), Ok(200));
        for bad in ["x", "", "-1m", "1e400", "inf", "m"] {
            assert_eq!(parse_size(bad), Err(InvalidSize(bad.into())), "{bad}");
        }
    }

    #[test]
    fn detach_key_specs() {
        assert_eq!(detach_keys(None), [16, 17]);
        assert_eq!(detach_keys(Some("ctrl-a,x")), [1, b'x']);
        assert_eq!(detach_keys(Some("ctrl-@,ctrl-_")), [0, 31]);
        assert_eq!(detach_keys(Some("nonsense")), [16, 17]);
    }
}
