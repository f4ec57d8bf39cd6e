//! Points in time and lengths of time. A [`Timestamp`] is milliseconds since the Unix epoch,
//! handed in by the caller; nothing here reads a clock.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }
    pub const fn millis(self) -> i64 {
        self.0
    }
    /// This time plus a span, saturating rather than overflowing.
    pub fn plus(self, span: Span) -> Timestamp {
        let add = i64::try_from(span.secs().saturating_mul(1000)).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(add))
    }
    /// This time minus a span, saturating.
    pub fn minus(self, span: Span) -> Timestamp {
        let sub = i64::try_from(span.secs().saturating_mul(1000)).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(sub))
    }
    pub fn plus_millis(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// RFC 3339 in UTC with milliseconds: `2026-11-21T09:30:00.000Z`.
    pub fn rfc3339(self) -> String {
        let days = self.0.div_euclid(86_400_000);
        let ms = self.0.rem_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    }
}

/// Year, month and day of a count of days since 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A length of time with one-second resolution, written as `30s`, `15m`, `1h30m` or `7d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Span(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {why} (write it as 30s, 15m, 1h30m or 7d)")]
pub struct ParseSpanError {
    text: String,
    why: &'static str,
}

/// The longest span anyone may write: ten years. It keeps every sum far from overflow.
const MAX_SECS: u64 = 10 * 366 * 24 * 3600;

impl Span {
    pub const fn from_secs(secs: u64) -> Span {
        Span(secs)
    }
    pub const fn secs(self) -> u64 {
        self.0
    }
    pub fn parse(text: &str) -> Result<Span, ParseSpanError> {
        let err = |why| ParseSpanError {
            text: text.to_owned(),
            why,
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => return Err(err("unknown unit; use s, m, h or d")),
            };
            if digits.is_empty() {
                return Err(err("a unit without a number"));
            }
            let n: u64 = digits.parse().map_err(|_| err("number too large"))?;
            digits.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("too long"))?;
        }
        if !digits.is_empty() {
            return Err(err("a number without a unit"));
        }
        if total == 0 {
            return Err(err("it must be longer than zero"));
        }
        if total > MAX_SECS {
            return Err(err("longer than ten years"));
        }
        Ok(Span(total))
    }
}

impl fmt::Display for Span {
    /// The shortest canonical spelling: `90s` is written `1m30s`, `86400s` is `1d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, name) in [(86400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
            if rest >= unit {
                write!(f, "{}{}", rest / unit, name)?;
                rest %= unit;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print_canonically() {
        let cases = [
            ("30s", "30s"),
            ("5m", "5m"),
            ("1h30m", "1h30m"),
            ("90m", "1h30m"),
            ("24h", "1d"),
            ("7d", "7d"),
        ];
        for (input, shown) in cases {
            assert_eq!(Span::parse(input).unwrap().to_string(), shown, "{input}");
        }
    }

    #[test]
    fn bad_spans_are_rejected_with_a_reason() {
        for bad in ["", "10", "h", "5x", "0s", "99999999999999999999s", "4000d"] {
            let e = Span::parse(bad).unwrap_err();
            assert!(e.to_string().contains("invalid duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn timestamps_print_as_rfc3339() {
        assert_eq!(
            Timestamp::from_millis(0).rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
        // 2026-11-21T09:30:05.123Z, 2024-02-29 (leap day) and a time before 1970.
        assert_eq!(
            Timestamp::from_millis(1_795_253_405_123).rfc3339(),
            "2026-11-21T09:30:05.123Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_709_164_800_000).rfc3339(),
            "2024-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(-1).rfc3339(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn timestamps_saturate() {
        let t = Timestamp::from_millis(i64::MAX - 5);
        assert_eq!(t.plus(Span::from_secs(10)).millis(), i64::MAX);
    }
}
