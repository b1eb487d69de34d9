//! Time as a value. The core never reads a clock: callers pass `Timestamp`s in.

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision, stored as microseconds since the Unix epoch.
///
/// It always renders as ISO-8601 UTC with six fractional digits (`2026-11-22T08:00:00.000000Z`),
/// so a timestamp hashes to the same bytes wherever it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Self(dt.timestamp_micros())
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.0).single().unwrap_or_default()
    }

    /// Parses an RFC 3339 timestamp (any offset) into UTC.
    pub fn parse(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| Self::from_datetime(d.with_timezone(&Utc)))
    }

    pub fn plus_ms(self, ms: u64) -> Self {
        Self(self.0.saturating_add((ms as i64).saturating_mul(1000)))
    }

    /// Milliseconds from `earlier` to `self`, never negative.
    pub fn ms_since(self, earlier: Timestamp) -> u64 {
        (self.0.saturating_sub(earlier.0).max(0) / 1000) as u64
    }

    /// Microseconds from `earlier` to `self`, never negative.
    pub fn micros_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0).max(0) as u64
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &self
                .to_datetime()
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid RFC 3339 timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fixed_precision_utc() {
        let t = Timestamp::from_micros(1_795_000_000_123_456);
        assert_eq!(t.to_string(), "2026-11-18T11:06:40.123456Z");
        assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
    }

    #[test]
    fn parses_offsets_into_utc() {
        let t = Timestamp::parse("2026-01-01T01:00:00+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-01-01T00:00:00.000000Z");
    }
}
