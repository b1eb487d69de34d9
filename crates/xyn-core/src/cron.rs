//! Five-field cron schedules (minute hour day-of-month month day-of-week), evaluated in UTC.

use std::str::FromStr;

use croner::Cron;

use crate::time::Timestamp;

/// A parsed cron schedule.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    source: String,
    cron: Cron,
}

impl CronSchedule {
    /// Parses a standard 5-field expression or an alias (`@hourly`, `@daily`, …).
    pub fn parse(expr: &str) -> Result<Self, String> {
        let expr = expr.trim();
        let is_alias = expr.starts_with('@');
        if !is_alias {
            let fields = expr.split_whitespace().count();
            if fields != 5 {
                return Err(format!(
                    "needs 5 fields (minute hour day-of-month month day-of-week), got {fields}"
                ));
            }
        }
        let cron = Cron::from_str(expr).map_err(|e| e.to_string())?;
        Ok(Self {
            source: expr.to_string(),
            cron,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&t.to_datetime(), false)
            .ok()
            .map(Timestamp::from_datetime)
    }

    /// The latest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&t.to_datetime(), true)
            .ok()
            .map(Timestamp::from_datetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_and_previous_slots() {
        let c = CronSchedule::parse("*/15 * * * *").unwrap();
        let t = Timestamp::parse("2026-11-22T10:07:30Z").unwrap();
        assert_eq!(
            c.next_after(t).unwrap().to_string(),
            "2026-11-22T10:15:00.000000Z"
        );
        assert_eq!(
            c.latest_at_or_before(t).unwrap().to_string(),
            "2026-11-22T10:00:00.000000Z"
        );
        let on = Timestamp::parse("2026-11-22T10:15:00Z").unwrap();
        assert_eq!(c.latest_at_or_before(on), Some(on));
        assert_eq!(
            c.next_after(on).unwrap().to_string(),
            "2026-11-22T10:30:00.000000Z"
        );
    }

    #[test]
    fn rejects_bad_expressions() {
        assert!(CronSchedule::parse("* * * *").is_err());
        assert!(CronSchedule::parse("0 * * * * *").is_err());
        assert!(CronSchedule::parse("61 * * * *").is_err());
        assert!(CronSchedule::parse("@hourly").is_ok());
    }
}
