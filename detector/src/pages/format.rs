//! How the pages write times and numbers: UTC always, said so, and numbers without noise.

/// `22:31` (UTC) of a Unix time.
pub fn clock(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.strftime("%H:%M").to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// `2026-11-23 22:31:05 UTC` of a Unix time.
pub fn time(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| format!("{t} (Unix seconds)"))
}

/// The machine-readable form for `<time datetime=...>`.
pub fn iso(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

/// `just now`, `4 min ago`, `3 h ago`, `2 days ago`, or `in 2 min` for a time ahead.
pub fn ago(t: i64, now: i64) -> String {
    let d = now - t;
    let (future, d) = (d < 0, d.abs());
    let text = match d {
        0..=44 => return "just now".into(),
        45..=5_399 => format!("{} min", (d + 30) / 60),
        5_400..=172_799 => format!("{} h", (d + 1_800) / 3_600),
        _ => format!("{} days", (d + 43_200) / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A value as a person reads it: integers plain, others with up to two decimals, trailing
/// zeros dropped; `–` for what is not a number.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let digits = if v.abs() >= 100.0 { 1 } else { 2 };
    let text = format!("{v:.digits$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// A positive figure that may span many orders of magnitude (an e-value), in scientific
/// notation with three digits: `4.82e4`.
pub fn sci(x: f64) -> String {
    if !x.is_finite() {
        return "∞".to_string();
    }
    format!("{x:.2e}")
}

/// A p-value: `< 0.0001` below that, three significant digits otherwise.
pub fn p_value(p: f64) -> String {
    if p < 1e-4 {
        "< 0.0001".into()
    } else {
        format!("{p:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_and_say_so() {
        assert_eq!(time(1_763_880_125), "2025-11-23 06:42:05 UTC");
        assert_eq!(clock(1_763_880_125), "06:42");
        assert_eq!(iso(1_763_880_125), "2025-11-23T06:42:05Z");
    }

    #[test]
    fn relative_times_round_to_the_nearest_unit() {
        assert_eq!(ago(100, 110), "just now");
        assert_eq!(ago(0, 240), "4 min ago");
        assert_eq!(ago(0, 3 * 3_600 + 100), "3 h ago");
        assert_eq!(ago(0, 2 * 86_400), "2 days ago");
        assert_eq!(ago(240, 0), "in 4 min");
    }

    #[test]
    fn numbers_lose_their_noise() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(0.333_333), "0.33");
        assert_eq!(number(123.456), "123.5");
        assert_eq!(number(-0.001), "0");
        assert_eq!(number(f64::NAN), "–");
        assert_eq!(p_value(0.000_01), "< 0.0001");
        assert_eq!(p_value(0.0123), "0.012");
    }
}
