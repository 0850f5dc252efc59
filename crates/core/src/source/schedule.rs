//! When a source's next cycle starts (§5 `schedule`, `rest_length`).
//!
//! A schedule, when set, says when cycles start: every `interval` counted from the previous
//! cycle's start, or at the times of a cron expression (UTC). Without one, a cycle starts
//! `rest_length` after the previous one ended. Either way a cycle never starts before the
//! previous one ended.

use crate::clock::Micros;
use crate::{Error, Result};
use std::str::FromStr;
use std::time::Duration;

/// A source's schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Schedule {
    /// No schedule: rest `rest_length` after each cycle.
    #[default]
    Rest,
    /// A cycle every `interval`, counted from the previous cycle's start.
    Interval(Duration),
    /// A cron expression (5 or 6 fields, UTC).
    Cron(String),
}

impl Schedule {
    /// Checks the schedule; `field` names it in violations.
    pub fn check(&self, field: &str) -> Result<()> {
        match self {
            Self::Rest => Ok(()),
            Self::Interval(d) if d.is_zero() => Err(Error::invalid(
                format!("{field}.interval"),
                "must be positive",
            )),
            Self::Interval(_) => Ok(()),
            Self::Cron(expr) => croner::Cron::from_str(expr).map(|_| ()).map_err(|e| {
                Error::invalid(
                    format!("{field}.cron"),
                    format!("not a cron expression: {e}"),
                )
            }),
        }
    }

    /// The stored text form: `""`, `every <millis>` or `cron <expression>`.
    pub fn to_text(&self) -> String {
        match self {
            Self::Rest => String::new(),
            Self::Interval(d) => format!("every {}", d.as_millis()),
            Self::Cron(expr) => format!("cron {expr}"),
        }
    }

    /// Parses the stored text form; `None` for anything else.
    pub fn from_text(text: &str) -> Option<Self> {
        if text.is_empty() {
            return Some(Self::Rest);
        }
        if let Some(ms) = text.strip_prefix("every ") {
            return ms
                .parse::<u64>()
                .ok()
                .map(|ms| Self::Interval(Duration::from_millis(ms)));
        }
        text.strip_prefix("cron ")
            .map(|expr| Self::Cron(expr.to_owned()))
    }

    /// When the cycle after one that started at `started` and ended at `ended` is due.
    pub fn next_run(&self, started: Micros, ended: Micros, rest_length: Duration) -> Micros {
        match self {
            Self::Rest => super::after(ended, rest_length),
            Self::Interval(d) => super::after(started, *d).max(ended),
            Self::Cron(expr) => {
                let next = croner::Cron::from_str(expr).ok().and_then(|cron| {
                    let from = chrono::DateTime::from_timestamp_micros(ended)?;
                    cron.find_next_occurrence(&from, false).ok()
                });
                // An expression that stopped parsing (it was checked when stored) or never
                // matches again falls back to resting.
                next.map_or_else(
                    || super::after(ended, rest_length),
                    |t| t.timestamp_micros(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    #[test]
    fn text_form_round_trips() {
        for s in [
            Schedule::Rest,
            Schedule::Interval(Duration::from_millis(1500)),
            Schedule::Cron("*/5 * * * *".into()),
        ] {
            assert_eq!(Schedule::from_text(&s.to_text()), Some(s));
        }
        assert_eq!(Schedule::from_text("bogus"), None);
    }

    #[test]
    fn next_run_rests_counts_intervals_from_the_start_or_follows_cron() {
        let rest = Duration::from_secs(100);
        assert_eq!(Schedule::Rest.next_run(0, 10 * SEC, rest), 110 * SEC);
        let every = Schedule::Interval(Duration::from_secs(60));
        assert_eq!(every.next_run(0, 10 * SEC, rest), 60 * SEC);
        assert_eq!(every.next_run(0, 90 * SEC, rest), 90 * SEC);
        // 2023-11-14T22:13:20Z; the next */5 minute is 22:15:00.
        let ended = 1_700_000_000 * SEC;
        let cron = Schedule::Cron("*/5 * * * *".into());
        assert_eq!(cron.next_run(ended, ended, rest), 1_700_000_100 * SEC);
        assert!(cron.check("source.schedule").is_ok());
        assert!(Schedule::Cron("nope".into())
            .check("source.schedule")
            .is_err());
    }
}
