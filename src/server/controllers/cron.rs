//! CronJob schedules: the standard five-field cron syntax upstream accepts (minute, hour,
//! day of month, month, day of week; `*`, `?`, lists, ranges, steps, month and weekday
//! names, 7 as Sunday) and the `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/
//! `@midnight` and `@hourly` descriptors, evaluated in a time zone (`spec.timeZone`, read
//! from the system's zoneinfo).

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

/// A schedule or time zone that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CronError {
    /// The schedule does not parse.
    #[error("unparseable schedule {schedule:?}: {reason}")]
    Syntax {
        /// The schedule.
        schedule: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `spec.timeZone` names no zone of the system's zoneinfo database.
    #[error("unknown time zone {0}: install tzdata or use an IANA name such as Europe/Berlin")]
    UnknownTimeZone(String),
}

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day of month or of week given as `*`/`?`: then both must match (robfig/cron's rule,
    /// which upstream uses); otherwise either may.
    day_star: bool,
    weekday_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn syntax(schedule: &str, reason: impl Into<String>) -> CronError {
    CronError::Syntax {
        schedule: schedule.to_string(),
        reason: reason.into(),
    }
}

/// Parses one field into a bit set of `min..=max`. Returns the bits and whether the field
/// was a bare `*`/`?`.
fn field(
    schedule: &str,
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
) -> Result<(u64, bool), CronError> {
    let value = |s: &str| -> Result<u32, CronError> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + min);
        }
        s.parse::<u32>()
            .map_err(|_| syntax(schedule, format!("failed to parse int from {s}")))
    };
    let mut bits = 0u64;
    let star = text == "*" || text == "?";
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step = s
                    .parse::<u32>()
                    .map_err(|_| syntax(schedule, format!("failed to parse int from {s}")))?;
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if step.is_some() { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(syntax(
                schedule,
                format!("{part} is out of range {min}-{max}"),
            ));
        }
        let step = step.unwrap_or(1);
        if step == 0 {
            return Err(syntax(
                schedule,
                "step of range should be a positive number",
            ));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parses a schedule.
    pub fn parse(schedule: &str) -> Result<Schedule, CronError> {
        let text = schedule.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            s if s.starts_with('@') => {
                return Err(syntax(schedule, format!("unrecognized descriptor: {text}")))
            }
            _ => text.to_string(),
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(syntax(
                schedule,
                format!("expected exactly 5 fields, found {}", parts.len()),
            ));
        }
        let (minutes, _) = field(schedule, parts[0], 0, 59, &[])?;
        let (hours, _) = field(schedule, parts[1], 0, 23, &[])?;
        let (days, day_star) = field(schedule, parts[2], 1, 31, &[])?;
        let (months, _) = field(schedule, parts[3], 1, 12, &MONTHS)?;
        let (mut weekdays, weekday_star) = field(schedule, parts[4], 0, 7, &DAYS)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            day_star,
            weekday_star,
        })
    }

    fn day_matches(&self, dt: &DateTime) -> bool {
        let dom = self.days & (1 << dt.day()) != 0;
        let dow = self.weekdays & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        if self.day_star || self.weekday_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time after `after` (strictly) that the schedule fires in `tz`, or None
    /// when there is none within five years (`0 0 30 2 *`).
    pub fn next_after(&self, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        let local = tz.to_datetime(after);
        let mut dt = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(Span::new().minutes(1))
            .ok()?;
        let limit = local.year() + 5;
        while dt.year() <= limit {
            if self.months & (1 << dt.month()) == 0 {
                dt = dt
                    .first_of_month()
                    .date()
                    .checked_add(Span::new().months(1))
                    .ok()?
                    .at(0, 0, 0, 0);
                continue;
            }
            if !self.day_matches(&dt) {
                dt = dt.date().tomorrow().ok()?.at(0, 0, 0, 0);
                continue;
            }
            if self.hours & (1 << dt.hour()) == 0 {
                dt = dt
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(Span::new().hours(1))
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << dt.minute()) == 0 {
                dt = dt.checked_add(Span::new().minutes(1)).ok()?;
                continue;
            }
            // A local time skipped by a DST change fires just after the gap.
            let t = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
            if t > after {
                return Some(t);
            }
            dt = dt.checked_add(Span::new().minutes(1)).ok()?;
        }
        None
    }
}

/// The time zone of `spec.timeZone` (UTC when unset), from /usr/share/zoneinfo.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, CronError> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(TimeZone::UTC);
    };
    if name == "UTC" || name == "Etc/UTC" {
        return Ok(TimeZone::UTC);
    }
    // Names are IANA identifiers: refuse anything that could leave the directory.
    if name.starts_with('/') || name.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(CronError::UnknownTimeZone(name.to_string()));
    }
    let dir = std::env::var_os("ZONEINFO").unwrap_or_else(|| "/usr/share/zoneinfo".into());
    let path = std::path::Path::new(&dir).join(name);
    let data = std::fs::read(path).map_err(|_| CronError::UnknownTimeZone(name.to_string()))?;
    TimeZone::tzif(name, &data).map_err(|_| CronError::UnknownTimeZone(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        Schedule::parse(schedule)
            .unwrap()
            .next_after(&TimeZone::UTC, at(after))
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn every_minute_and_steps() {
        assert_eq!(
            next("*/1 * * * *", "2024-01-01T10:00:30Z"),
            "2024-01-01T10:01:00Z"
        );
        assert_eq!(
            next("* * * * *", "2024-01-01T10:00:00Z"),
            "2024-01-01T10:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-01-01T10:16:00Z"),
            "2024-01-01T10:30:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2024-01-01T10:26:00Z"),
            "2024-01-01T10:45:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2024-01-01T10:00:00Z"),
            "2024-01-01T13:00:00Z"
        );
    }

    #[test]
    fn descriptors_names_and_rollover() {
        assert_eq!(
            next("@hourly", "2024-01-01T10:00:00Z"),
            "2024-01-01T11:00:00Z"
        );
        assert_eq!(
            next("@daily", "2024-12-31T10:00:00Z"),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "2024-03-01T00:00:00Z"),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            next("0 0 * * MON", "2024-01-01T00:00:00Z"),
            "2024-01-08T00:00:00Z"
        );
        assert_eq!(
            next("0 0 1 FEB *", "2024-01-05T00:00:00Z"),
            "2024-02-01T00:00:00Z"
        );
        assert_eq!(
            next("0 0 * * 7", "2024-01-01T00:00:00Z"),
            "2024-01-07T00:00:00Z"
        );
        assert_eq!(
            next("0 0 29 2 *", "2023-03-01T00:00:00Z"),
            "2024-02-29T00:00:00Z"
        );
    }

    #[test]
    fn day_of_month_or_week_when_both_are_restricted() {
        // 2024-01-01 is a Monday: the 15th or any Friday.
        assert_eq!(
            next("0 0 15 * FRI", "2024-01-01T00:00:00Z"),
            "2024-01-05T00:00:00Z"
        );
        assert_eq!(
            next("0 0 15 * FRI", "2024-01-12T00:00:00Z"),
            "2024-01-15T00:00:00Z"
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        for s in [
            "* * * *",
            "61 * * * *",
            "*/0 * * * *",
            "@every 5m",
            "a * * * *",
            "5-1 * * * *",
        ] {
            assert!(Schedule::parse(s).is_err(), "{s} parsed");
        }
        assert_eq!(next("0 0 30 2 *", "2024-01-01T00:00:00Z"), "");
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let Ok(tz) = time_zone(Some("Europe/Berlin")) else {
            panic!("Europe/Berlin not in /usr/share/zoneinfo: apt-get install tzdata");
        };
        let s = Schedule::parse("0 9 * * *").unwrap();
        let t = s.next_after(&tz, at("2024-01-01T00:00:00Z")).unwrap();
        assert_eq!(t.to_string(), "2024-01-01T08:00:00Z");
        assert!(matches!(
            time_zone(Some("Mars/Olympus")),
            Err(CronError::UnknownTimeZone(_))
        ));
        assert!(time_zone(Some("../etc/passwd")).is_err());
        assert_eq!(time_zone(None).unwrap(), TimeZone::UTC);
    }
}
