//! Docker's human formats, written once for the berth CLI and the engine (which must agree):
//! "Up 5 minutes" durations, `10m`-style sizes, `--since`/`until` times, and `--detach-keys`
//! sequences.

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

/// A time that is neither Unix seconds, a duration nor a date.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid time {0:?}: use Unix seconds, a duration such as 10m or 1h30m, or a date such as 2026-01-02T15:04:05Z")]
pub struct InvalidTime(pub String);

/// Docker's timestamps for `--since`, `--until` and `until=` filters, as Unix seconds: Unix
/// seconds (`1700000000.5`), a Go duration before `now` (`10m`, `1h30m`, `300ms`), or an RFC
/// 3339 date or a prefix of one (`2026-01-02`, `2026-01-02T15:04`, `…:05.5+01:00`; UTC when no
/// zone is given).
pub fn parse_timestamp(s: &str, now: f64) -> Result<f64, InvalidTime> {
    let bad = || InvalidTime(s.to_string());
    let t = s.trim();
    if let Ok(n) = t.parse::<f64>()
        && n.is_finite()
        && !t.contains(['e', 'E'])
    {
        return Ok(n);
    }
    if let Some(d) = go_duration(t) {
        return Ok(now - d as f64 / 1e9);
    }
    date(t).ok_or_else(bad)
}

/// Go's `time.ParseDuration`: `1h30m`, `10m`, `2.5s`, `300ms`, `-1m`, `0`; nanoseconds. None
/// for what Go refuses (a bare number other than 0, an unknown unit) or what overflows.
pub fn go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let n: f64 = rest[..n_end].parse().ok()?;
        let unit_end = rest[n_end..].find(|c: char| c.is_ascii_digit() || c == '.').map_or(rest.len(), |i| n_end + i);
        let scale = match &rest[n_end..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return None;
    }
    let ns = total.round() as i64;
    Some(if neg { -ns } else { ns })
}

/// Go's `time.Duration.String()`: `0s`, `1.5s`, `1m30s`, `2h0m0s`, `500ms`, `3µs`.
pub fn go_duration_string(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let u = ns.unsigned_abs();
    let frac = |v: u64, unit: u64| -> String {
        let (whole, rest) = (v / unit, v % unit);
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.to_string().len() - 1;
        let f = format!("{rest:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    };
    let s = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 1_000))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 1_000_000))
    } else {
        let secs = u / 1_000_000_000;
        let s_part = frac((secs % 60) * 1_000_000_000 + u % 1_000_000_000, 1_000_000_000);
        let (h, m) = (secs / 3600, secs / 60 % 60);
        if h > 0 {
            format!("{h}h{m}m{s_part}s")
        } else if m > 0 {
            format!("{m}m{s_part}s")
        } else {
            format!("{s_part}s")
        }
    };
    if ns < 0 { format!("-{s}") } else { s }
}

/// `YYYY-MM-DD[THH[:MM[:SS[.frac]]]][Z|±HH:MM]`: Unix seconds.
fn date(s: &str) -> Option<f64> {
    let (body, offset) = match s.find(['Z', 'z']) {
        Some(i) if i == s.len() - 1 => (&s[..i], 0.0),
        Some(_) => return None,
        None => match s.get(10..).and_then(|t| t.rfind(['+', '-'])).map(|i| i + 10) {
            Some(i) => {
                let (h, m) = s[i + 1..].split_once(':')?;
                let mins = h.parse::<f64>().ok()? * 60.0 + m.parse::<f64>().ok()?;
                (&s[..i], if &s[i..=i] == "+" { mins * 60.0 } else { -mins * 60.0 })
            }
            None => (s, 0.0),
        },
    };
    let (day, clock) = body.split_once(['T', ' ']).unwrap_or((body, ""));
    let d: Vec<&str> = day.split('-').collect();
    let [y, mo, da] = d.as_slice() else { return None };
    if y.len() != 4 || mo.len() != 2 || da.len() != 2 {
        return None;
    }
    let (y, mo, da): (i64, i64, i64) = (y.parse().ok()?, mo.parse().ok()?, da.parse().ok()?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let mut secs = 0.0;
    if !clock.is_empty() {
        let parts: Vec<&str> = clock.split(':').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        for (p, mult) in parts.iter().zip([3600.0, 60.0, 1.0]) {
            let v: f64 = p.parse().ok()?;
            if v < 0.0 || (mult > 1.0 && p.contains('.')) {
                return None;
            }
            secs += v * mult;
        }
    }
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + secs - offset)
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

/// A size in decimal units as Go's `%.*g` writes it (Docker's `units.HumanSizeWithPrecision`):
/// `digits` significant digits, no trailing zeros (`1.235MB` with 4, `45.6kB`).
pub fn human_size(n: u64, digits: usize) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let int_digits = if v < 1.0 { 1 } else { v.log10().floor() as usize + 1 };
    let s = format!("{v:.*}", digits.saturating_sub(int_digits));
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    format!("{s}{}", units[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_as_go_writes_them() {
        assert_eq!(human_size(0, 4), "0B");
        assert_eq!(human_size(999, 4), "999B");
        assert_eq!(human_size(1_234_567, 4), "1.235MB");
        assert_eq!(human_size(1_234_567, 3), "1.23MB");
        assert_eq!(human_size(2_000_000, 4), "2MB");
        assert_eq!(human_size(45_600, 4), "45.6kB");
    }

    #[test]
    fn go_durations_both_ways() {
        for (ns, text) in [
            (0, "0s"),
            (3_000_000_000, "3s"),
            (90_000_000_000, "1m30s"),
            (1_500_000_000, "1.5s"),
            (500_000_000, "500ms"),
            (7_200_000_000_000, "2h0m0s"),
            (1_500, "1.5µs"),
            (12, "12ns"),
            (-2_000_000, "-2ms"),
        ] {
            assert_eq!(go_duration_string(ns), text);
            assert_eq!(go_duration(text), Some(ns), "{text}");
        }
        assert_eq!(go_duration("1h2m3.5s"), Some(3_723_500_000_000));
        assert_eq!(go_duration("0"), Some(0));
        for bad in ["10", "", "1x", "s", "-", "1e400h", "99999999999h"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

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
    fn timestamps_as_docker_reads_them() {
        let now = 1_800_000_000.0;
        assert_eq!(parse_timestamp("1700000000", now), Ok(1_700_000_000.0));
        assert_eq!(parse_timestamp("1700000000.25", now), Ok(1_700_000_000.25));
        assert_eq!(parse_timestamp("10m", now), Ok(now - 600.0));
        assert_eq!(parse_timestamp("1h30m", now), Ok(now - 5400.0));
        assert_eq!(parse_timestamp("300ms", now), Ok(now - 0.3));
        assert_eq!(parse_timestamp("2026-01-02", now), Ok(1_767_312_000.0));
        assert_eq!(parse_timestamp("2026-01-02T03:04:05Z", now), Ok(1_767_312_000.0 + 3.0 * 3600.0 + 4.0 * 60.0 + 5.0));
        assert_eq!(parse_timestamp("2026-01-02T03:04", now), Ok(1_767_312_000.0 + 3.0 * 3600.0 + 4.0 * 60.0));
        assert_eq!(parse_timestamp("2026-01-02T01:00:00+01:00", now), Ok(1_767_312_000.0));
        assert_eq!(parse_timestamp("2026-01-01T23:00:00.5-01:00", now), Ok(1_767_312_000.5));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z", now), Ok(0.0));
        for bad in ["", "x", "10q", "2026-13-01", "2026-1-2", "2026-01-02T25:00Z0", "1e9", "inf", "h"] {
            assert_eq!(parse_timestamp(bad, now), Err(InvalidTime(bad.into())), "{bad}");
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
