//! Time-zone aware cron schedules for cron triggers.
//!
//! A [`Schedule`] is a five-field cron expression (`minute hour day-of-month month day-of-week`)
//! or one of the aliases `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@hourly`,
//! evaluated in an IANA time zone (UTC when none is given). Parsing and evaluation are done by
//! `croner`; names come from `chrono-tz`. All instants crossing this module's API are Unix
//! milliseconds.
//!
//! Field syntax: `*`, lists `1,2`, ranges `1-5`, steps `*/15` and `1-30/5`, month and weekday
//! names (`JAN`, `MON`), and croner's extensions (`L`, `W`, `#`, `+`). Day of week 0 and 7 are both
//! Sunday. As in Vixie cron, when both day of month and day of week are restricted, a day matching
//! either runs. Six-field (seconds) expressions are refused: schedules have minute granularity.
//!
//! Daylight saving time, in the schedule's zone (tested in `tests/cron.rs`):
//! - Spring forward: a wall-clock time that does not exist that day (02:30 on the day clocks jump
//!   from 02:00 to 03:00) runs once, at the first instant after the gap (03:00 local). Interval
//!   schedules (`*/15 * * * *`) simply have no runs inside the gap.
//! - Fall back: a fixed-time schedule (exactly one minute value and one hour value, e.g.
//!   `30 1 * * *`) whose time falls in the repeated hour runs once, at its first occurrence. Any
//!   other schedule (a wildcard, step, list or range in the minute or hour field) runs in both
//!   copies of the hour, because it describes a cadence rather than a time of day.
//!
//! Invariants: [`Schedule::next_after`] is strictly after its argument and never panics; an
//! instant outside the representable range, or a schedule that never fires again (`0 0 30 2 *`),
//! gives `None`.

use std::fmt;
use std::str::FromStr as _;

use chrono::{TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// Errors from parsing a schedule.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// The expression is empty.
    #[error(
        "cron expression is empty; expected five fields, e.g. `0 3 * * *`, or an alias like `@daily`"
    )]
    Empty,
    /// The expression has the wrong number of fields.
    #[error(
        "cron expression `{expression}` has {fields} fields; expected five \
         (minute hour day-of-month month day-of-week), e.g. `30 2 * * 1-5`"
    )]
    WrongFieldCount {
        /// The expression as given.
        expression: String,
        /// How many whitespace-separated fields it has.
        fields: usize,
    },
    /// croner rejected the expression.
    #[error("invalid cron expression `{expression}`: {reason}")]
    InvalidExpression {
        /// The expression as given.
        expression: String,
        /// croner's explanation.
        reason: String,
    },
    /// The time zone is not a known IANA name.
    #[error(
        "unknown time zone `{0}`; use an IANA name such as `UTC`, `Europe/Paris` or `America/New_York`"
    )]
    UnknownTimeZone(String),
}

/// A parsed cron schedule bound to a time zone. See the module documentation for semantics.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    timezone: Tz,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("expression", &self.expression)
            .field("timezone", &self.timezone.name())
            .finish()
    }
}

impl Schedule {
    /// Parses a five-field cron expression or an `@alias`, evaluated in `timezone` (an IANA name;
    /// `None` means UTC).
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<Schedule, CronError> {
        let expression = expr.trim();
        if expression.is_empty() {
            return Err(CronError::Empty);
        }
        let timezone = match timezone.map(str::trim) {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| CronError::UnknownTimeZone(name.to_owned()))?,
        };
        if !expression.starts_with('@') {
            let fields = expression.split_whitespace().count();
            if fields != 5 {
                return Err(CronError::WrongFieldCount {
                    expression: expression.to_owned(),
                    fields,
                });
            }
        }
        let cron = Cron::from_str(expression).map_err(|error| CronError::InvalidExpression {
            expression: expression.to_owned(),
            reason: error.to_string(),
        })?;
        Ok(Schedule {
            expression: expression.to_owned(),
            cron,
            timezone,
        })
    }

    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA name of the schedule's time zone.
    pub fn timezone(&self) -> &'static str {
        self.timezone.name()
    }

    /// The first instant the schedule fires strictly after `after_unix_ms`, in Unix milliseconds;
    /// `None` when there is none (out-of-range input, or a pattern that never matches again).
    pub fn next_after(&self, after_unix_ms: i64) -> Option<i64> {
        let after = Utc.timestamp_millis_opt(after_unix_ms).single()?;
        let zoned = after.with_timezone(&self.timezone);
        let next = self.cron.find_next_occurrence(&zoned, false).ok()?;
        let next_ms = next.timestamp_millis();
        // croner starts from the next whole second; keep the contract explicit.
        (next_ms > after_unix_ms).then_some(next_ms)
    }

    /// A human-readable description, e.g. "At 02:30 every day (Europe/Paris)".
    pub fn describe(&self) -> String {
        let text = self.cron.describe();
        format!("{} ({})", text.trim_end_matches('.'), self.timezone.name())
    }
}
