//! Parsing and printing of durations, and the clock of event timestamps.

use std::time::Duration;

/// CLOCK_MONOTONIC in ns, the clock of every event's timestamps.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Parses `500ms`, `5s`, `2m`, `1h`, `250us`, `100ns`; a bare number is
/// seconds. Fractions are allowed (`1.5s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}': expected e.g. 500ms, 5s, 2m"))?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => {
            return Err(format!(
                "invalid duration '{s}': unknown unit '{u}' (use ns, us, ms, s, m, h)"
            ));
        }
    };
    let secs = n * scale;
    if !secs.is_finite() || secs <= 0.0 || secs > 366.0 * 86400.0 {
        return Err(format!(
            "invalid duration '{s}': must be > 0 and at most a year"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Short human form of a nanosecond count, at most 8 characters:
/// `812 ns`, `12.3 us`, `4.56 ms`, `1.20 s`, `13.0 m`.
pub fn fmt_ns(ns: u64) -> String {
    let f = ns as f64;
    let (v, unit) = if ns < 1_000 {
        return format!("{ns} ns");
    } else if ns < 1_000_000 {
        (f / 1e3, "us")
    } else if ns < 1_000_000_000 {
        (f / 1e6, "ms")
    } else if ns < 600_000_000_000 {
        (f / 1e9, "s")
    } else if ns < 36_000_000_000_000 {
        (f / 60e9, "m")
    } else if ns < 360_000_000_000_000 {
        (f / 3600e9, "h")
    } else {
        (f / 86400e9, "d")
    };
    if v < 10.0 {
        format!("{v:.2} {unit}")
    } else if v < 100.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn rejects_bad_durations_with_a_reason() {
        for bad in ["", "abc", "5x", "-1s", "0s", "1e3s", "5 parsecs"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn formats_compactly() {
        for (ns, want) in [
            (812, "812 ns"),
            (12_345, "12.3 us"),
            (4_560_000, "4.56 ms"),
            (3_000_000_000, "3.00 s"),
            (999_999, "1000 us"),
        ] {
            assert_eq!(fmt_ns(ns), want);
        }
        for ns in [0, 1, 999, 1000, 99_999_999, 1 << 40, u64::MAX] {
            assert!(fmt_ns(ns).len() <= 8, "{ns} -> {}", fmt_ns(ns));
        }
    }
}
