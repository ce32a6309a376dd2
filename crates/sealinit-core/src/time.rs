//! Wall-clock helpers: Unix seconds, RFC 3339 rendering and TTL parsing,
//! without a date library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Current time in Unix seconds (0 if the clock is before 1970).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds `t` (UTC, proleptic Gregorian).
pub fn rfc3339(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01; Howard Hinnant's
/// algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = y - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds of an RFC 3339 time: `2026-12-03T12:00:00Z`, with a
/// fraction (dropped) and an offset (`+01:00`) allowed; `t` or a space in
/// place of `T`, `z` for `Z`. `None` if it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let n = s.len();
            let (oh, om) = (num(n - 5..n - 3)?, num(n - 2..n)?);
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Parses a duration such as `30s`, `15m`, `2h` or `7d` (a positive whole
/// number and one unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {s:?}: use whole seconds (90) or numbers with units s, m, h, d (30s, 15m, 1h30m, 7d)"
        )
    };
    // Bare whole seconds, as API clients send them.
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
            _ => Err(bad()),
        };
    }
    // Compound: 1h30m, 2d12h; units in decreasing order, each once.
    let (mut total, mut rest, mut last) = (0u64, s, u64::MAX);
    while !rest.is_empty() {
        let unit_at = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, after) = rest.split_at(unit_at);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult = match after.as_bytes()[0] {
            b's' => 1,
            b'm' => 60,
            b'h' => 3_600,
            b'd' => 86_400,
            _ => return Err(bad()),
        };
        if mult >= last {
            return Err(bad());
        }
        last = mult;
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &after[1..];
    }
    match total {
        0 => Err(bad()),
        secs => Ok(Duration::from_secs(secs)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_000_000), "2026-12-23T04:26:40Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn parses_rfc3339() {
        for t in [0, 951_782_400, 1_798_000_000, 4_107_542_399] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t as i64));
        }
        assert_eq!(
            parse_rfc3339("2026-12-23T04:26:40.123Z"),
            Some(1_798_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-12-23T05:26:40+01:00"),
            Some(1_798_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-12-23T03:56:40-00:30"),
            Some(1_798_000_000)
        );
        for bad in [
            "2026-12-23",
            "2026-13-01T00:00:00Z",
            "2026-12-23T04:26:40",
            "x026-12-23T04:26:40Z",
            "2026-12-23T04:26:40+0100",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("2d1h1m1s"), Ok(Duration::from_secs(176_461)));
        for bad in ["1m1h", "1h1h", "0", "0s", "h", "1h30", "1x", "-5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            "s",
            "0s",
            "-5s",
            "1.5h",
            "3w",
            "5 m",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
