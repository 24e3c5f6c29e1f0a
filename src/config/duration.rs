//! Parses config durations: an integer with a unit, `250ms`, `15s`, `10m`, `1h`.

use std::time::Duration;

/// Parses `text` as a duration, or says what is wrong with it.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || {
        format!(
            "invalid duration `{text}`: expected a number with a unit (ms, s, m, h), e.g. `15s`"
        )
    };
    let n: u64 = number.parse().map_err(|_| expected())?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(expected()),
    };
    if duration > MAX {
        return Err(format!(
            "duration `{text}` is too long: at most 8760h (a year)"
        ));
    }
    Ok(duration)
}

/// `d` as the config would spell it, in its largest exact unit: `250ms`, `15s`, `10m`, `1h`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if !ms.is_multiple_of(1000) => format!("{ms}ms"),
        _ if ms.is_multiple_of(3_600_000) && ms > 0 => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) && ms > 0 => format!("{}m", ms / 60_000),
        _ => format!("{}s", ms / 1000),
    }
}

/// Longer timers are a mistake, and far-future deadlines would overflow `Instant`.
const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn formats_in_the_largest_exact_unit_and_parses_back() {
        for text in ["250ms", "1500ms", "15s", "90s", "10m", "1h", "0s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }

    #[test]
    fn rejects_durations_over_a_year() {
        assert_eq!(parse("8760h"), Ok(Duration::from_secs(365 * 24 * 3600)));
        assert!(parse("8761h").is_err());
        assert!(parse("18446744073709551615s").is_err());
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        for bad in ["15", "s", "", "1.5s", "10 min", "-1s", "5d"] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
