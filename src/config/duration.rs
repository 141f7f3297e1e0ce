//! Human durations in config: `500ms`, `30s`, `10m`, `2h`, `1d`, decimals (`1.5s`, `0.5m`) exact
//! to the millisecond, or combinations (`1m30s`). A bare YAML number is seconds.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

/// Parse `500ms`, `1.5s`, `10m`, `2.25h`, `1d` or a sum of them (`1m30s`). Decimals must come
/// out as whole milliseconds (`1.0005s` is refused, not rounded).
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let bad = |why: String| format!("invalid duration {s:?}: {why}");
    if s.starts_with('-') {
        return Err(bad("negative durations are not allowed".into()));
    }
    let mut total_ms: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if int_len == 0 {
            return Err(bad("expected a number, e.g. 30s, 1.5s, 10m, 2h".into()));
        }
        let (int, mut after) = rest.split_at(int_len);
        let mut frac = "";
        if let Some(r) = after.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return Err(bad(format!(
                    "expected a digit after the decimal point in {int}."
                )));
            }
            (frac, after) = r.split_at(n);
        }
        let number = &rest[..rest.len() - after.len()];
        let after = after.trim_start();
        let unit_len = after
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .count();
        let (unit, tail) = after.split_at(unit_len);
        let unit_ms: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(bad(match tail.chars().next() {
                    None => format!("missing unit after {number} (ms, s, m, h, d)"),
                    Some(c) => format!(
                        "unexpected {c:?} after {number} (a decimal takes a point, e.g. 1.5s)"
                    ),
                }));
            }
            u => return Err(bad(format!("unknown unit {u:?} (ms, s, m, h, d)"))),
        };
        let ms = whole_millis(int, frac, unit_ms).map_err(|why| {
            bad(match why {
                Inexact::NotWhole => {
                    format!("{number}{unit} is not a whole number of milliseconds")
                }
                Inexact::TooLarge => "number too large".into(),
            })
        })?;
        total_ms = total_ms
            .checked_add(ms)
            .ok_or_else(|| bad("number too large".into()))?;
        rest = tail.trim_start();
    }
    u64::try_from(total_ms)
        .map(Duration::from_millis)
        .map_err(|_| bad("number too large".into()))
}

enum Inexact {
    NotWhole,
    TooLarge,
}

/// `<int>.<frac>` units of `unit_ms` milliseconds each, when that is a whole number of
/// milliseconds. Integer arithmetic only: `0.1s` is exactly 100 ms, not 100.000000000000005.
fn whole_millis(int: &str, frac: &str, unit_ms: u128) -> Result<u128, Inexact> {
    let whole = int
        .parse::<u128>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .ok_or(Inexact::TooLarge)?;
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        return Ok(whole);
    }
    // A fraction without trailing zeros over 10^k is whole milliseconds only if 2^k or 5^k
    // divides the unit (at most 2^10, in a day): longer fractions cannot be exact, and this
    // bound keeps the product below u128::MAX.
    if frac.len() > 18 {
        return Err(Inexact::NotWhole);
    }
    let scale = 10u128.pow(frac.len() as u32);
    let part = frac.parse::<u128>().map_err(|_| Inexact::TooLarge)? * unit_ms;
    if !part.is_multiple_of(scale) {
        return Err(Inexact::NotWhole);
    }
    whole.checked_add(part / scale).ok_or(Inexact::TooLarge)
}

/// A string as [`parse`] reads it, or a bare YAML number of seconds (`10`, `1.5`).
impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as 500ms, 1.5s, 10m or 2h (a bare number is seconds)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                parse(s).map(HumanDuration).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                Ok(HumanDuration(Duration::from_secs(n)))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "invalid duration {n}: negative durations are not allowed"
                    ))),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                if n < 0.0 {
                    return Err(E::custom(format!(
                        "invalid duration {n}: negative durations are not allowed"
                    )));
                }
                if !n.is_finite() {
                    return Err(E::custom(format!("invalid duration {n}: not a number")));
                }
                // Rust prints the shortest decimal that reads back as `n`: what was written.
                parse(&format!("{}s", n.abs()))
                    .map(HumanDuration)
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse("10").unwrap_err().contains("missing unit"));
        assert!(parse("5 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err());
    }

    #[test]
    fn parses_decimals_exact_to_the_millisecond() {
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0.5m").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("2.25h").unwrap(), Duration::from_secs(8100));
        assert_eq!(parse("1.5d").unwrap(), Duration::from_secs(129_600));
        assert_eq!(parse("0.001s").unwrap(), Duration::from_millis(1));
        assert_eq!(parse("1m0.5s").unwrap(), Duration::from_millis(60_500));
        assert_eq!(parse("1.500000s").unwrap(), Duration::from_millis(1500));
        let e = parse("1.0005s").unwrap_err();
        assert!(e.contains("1.0005s") && e.contains("millisecond"), "{e}");
        assert!(parse("0.5ms").unwrap_err().contains("millisecond"));
        assert!(parse("-1s").unwrap_err().contains("negative"));
        assert!(parse("-1.5s").unwrap_err().contains("negative"));
        assert!(
            parse("1.s")
                .unwrap_err()
                .contains("digit after the decimal point")
        );
        assert!(parse("1.5").unwrap_err().contains("missing unit"));
    }

    #[test]
    fn yaml_numbers_are_seconds_and_decimals_work_in_config() {
        let d = |y: &str| serde_norway::from_str::<HumanDuration>(y).map(HumanDuration::get);
        assert_eq!(d("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(d("\"0.5m\"").unwrap(), Duration::from_secs(30));
        assert_eq!(d("10").unwrap(), Duration::from_secs(10));
        assert_eq!(d("1.5").unwrap(), Duration::from_millis(1500));
        assert!(d("-3").unwrap_err().to_string().contains("negative"));
        assert!(d("0.0001").unwrap_err().to_string().contains("millisecond"));
    }
}
