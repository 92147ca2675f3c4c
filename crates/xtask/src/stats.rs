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

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE)
}

pub fn mark(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
