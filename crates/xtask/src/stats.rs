//! The little arithmetic the benchmarks share.

use std::time::Duration;

pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    match values.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}

/// "median (min-max)" in seconds of the values seen, with how many runs never saw one; "–"
/// when none did.
pub fn spread(values: impl IntoIterator<Item = Option<Duration>>) -> String {
    let all: Vec<Option<Duration>> = values.into_iter().collect();
    let seen: Vec<Duration> = all.iter().flatten().copied().collect();
    if seen.is_empty() {
        return "–".to_owned();
    }
    let min = seen.iter().min().copied().unwrap_or_default();
    let max = seen.iter().max().copied().unwrap_or_default();
    let missing = all.len() - seen.len();
    format!(
        "{:.1} ({:.1}-{:.1}){}",
        median(seen).as_secs_f64(),
        min.as_secs_f64(),
        max.as_secs_f64(),
        if missing > 0 {
            format!(", never in {missing}")
        } else {
            String::new()
        }
    )
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE)
}

pub fn mark(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
