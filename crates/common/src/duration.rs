//! Durations on the command line and in env vars: `500ms`, `2s`, `5m`, `1h`, or a sum such as
//! `1m30s`. Written here rather than taken from a crate because the grammar is tiny (one small
//! module, no dependency in either binary) and its errors name the bad part the way every other
//! message of the two CLIs does. (humantime, the usual crate, is maintained: the unmaintained
//! advisory RUSTSEC-2025-0014 was withdrawn.)

use std::fmt;
use std::time::Duration;

/// Why a duration did not parse; the message names the bad part and shows what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    input: String,
    problem: String,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: {}; write a number with a unit, e.g. 500ms, 2s, 5m, 1h or 1m30s",
            self.input, self.problem
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses `500ms`, `2s`, `5m`, `1h`, `1m30s`. A bare number is refused: `5` could mean
/// seconds or milliseconds, and guessing wrong by 1000x is worse than asking.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = |problem: String| DurationError {
        input: input.to_owned(),
        problem,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(error("it is empty".into()));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(error(format!("expected a number at {rest:?}")));
        }
        let (digits, after_digits) = rest.split_at(digits_end);
        let unit_end = after_digits
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after_digits.len());
        let (unit, after_unit) = after_digits.split_at(unit_end);
        let value: u64 = digits
            .parse()
            .map_err(|_| error(format!("{digits} is too large")))?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(error(format!("{digits} has no unit"))),
            other => return Err(error(format!("unknown unit {other:?} (use ms, s, m or h)"))),
        };
        let part = value
            .checked_mul(millis_per_unit)
            .map(Duration::from_millis)
            .ok_or_else(|| error("it is too large".into()))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| error("it is too large".into()))?;
        rest = after_unit;
    }
    Ok(total)
}

/// Like `parse_duration`, for flags where zero makes no sense (timeouts, intervals); gives the
/// message as a `String`, which is what clap's value parsers want.
pub fn parse_positive_duration(input: &str) -> Result<Duration, String> {
    match parse_duration(input) {
        Ok(Duration::ZERO) => Err("it must be longer than zero".into()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(error.to_string()),
    }
}

/// Formats a duration the way `parse_duration` reads it, choosing the largest exact unit:
/// `250ms`, `2s`, `1m30s`.
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_sums() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_it_cannot_read_and_says_why() {
        let message = |s: &str| parse_duration(s).unwrap_err().to_string();
        assert!(message("").contains("it is empty"));
        assert!(message("5").contains("5 has no unit"));
        assert!(message("2sec").contains("unknown unit \"sec\""));
        assert!(message("ms").contains("expected a number at \"ms\""));
        assert!(message("-1s").contains("expected a number"));
        assert!(message("1.5s").contains("unknown unit \".\""));
        assert!(message("99999999999999999999s").contains("too large"));
        assert!(message("18446744073709551615h").contains("too large"));
        assert!(message("2x").contains("e.g. 500ms, 2s, 5m"));
    }

    #[test]
    fn positive_durations_refuse_zero() {
        assert_eq!(parse_positive_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(
            parse_positive_duration("0ms"),
            Err("it must be longer than zero".into())
        );
        assert!(
            parse_positive_duration("2")
                .unwrap_err()
                .contains("has no unit")
        );
    }

    #[test]
    fn formats_back_to_what_it_parses() {
        for text in ["250ms", "2s", "1m30s", "1h", "1h1m1s1ms"] {
            let duration = parse_duration(text).unwrap();
            assert_eq!(format_duration(duration), text);
        }
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
