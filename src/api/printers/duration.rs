//! Ages and durations as kubectl shows them: upstream's `HumanDuration`
//! (k8s.io/apimachinery `pkg/util/duration`) and the printers' "time since" helpers,
//! with `metav1.Time` parsing from the raw JSON.

use jiff::Timestamp;
use serde_json::Value;

/// Upstream's HumanDuration for ages ("5s", "3m12s", "4h", "2d3h"): two to three
/// significant figures. A missing timestamp prints as `<unknown>`, which the printers
/// produce themselves; a `Duration` is always known.
pub fn human_duration(d: std::time::Duration) -> String {
    human_seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// HumanDuration of a signed span given in whole seconds (truncated toward zero, as Go's
/// `int(d.Seconds())`). Up to a second in the future counts as now (clock skew); more
/// is `<invalid>`.
pub(crate) fn human_seconds(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 2 * 60 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{days}d");
        }
        return format!("{days}d{h}h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let dy = days % 365;
        if dy == 0 {
            return format!("{years}y");
        }
        return format!("{years}y{dy}d");
    }
    format!("{years}y")
}

/// Go's zero `time.Time` (0001-01-01T00:00:00Z), which `IsZero` treats as unset.
const GO_ZERO_SECONDS: i64 = -62_135_596_800;

/// Parses a `metav1.Time` / `metav1.MicroTime` JSON value. Missing, null, empty,
/// malformed and the zero time are all "unset".
pub(crate) fn parse_time(v: Option<&Value>) -> Option<Timestamp> {
    let t: Timestamp = v?.as_str()?.parse().ok()?;
    if t.as_second() == GO_ZERO_SECONDS && t.subsec_nanosecond() == 0 {
        return None;
    }
    Some(t)
}

/// Whole seconds from `earlier` to `later`, truncated toward zero.
fn seconds_between(later: Timestamp, earlier: Timestamp) -> i64 {
    later.duration_since(earlier).as_secs()
}

/// HumanDuration of `now - t`, or `<unknown>` when `t` is unset
/// (upstream's `translateTimestampSince`).
pub(crate) fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_seconds(seconds_between(now, t)),
        None => "<unknown>".to_string(),
    }
}

/// HumanDuration of `later - earlier`.
pub(crate) fn between(later: Timestamp, earlier: Timestamp) -> String {
    human_seconds(seconds_between(later, earlier))
}

/// The age cell: time since `metadata.creationTimestamp`.
pub(crate) fn age(obj: &Value, now: Timestamp) -> String {
    since(parse_time(obj.pointer("/metadata/creationTimestamp")), now)
}

/// RFC 3339 in UTC with whole seconds (Go's `time.RFC3339` layout).
pub(crate) fn rfc3339_seconds(t: Timestamp) -> String {
    match Timestamp::from_second(t.as_second()) {
        Ok(whole) => whole.to_string(),
        Err(_) => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn hd(secs: u64) -> String {
        human_duration(Duration::from_secs(secs))
    }

    const M: u64 = 60;
    const H: u64 = 3600;
    const D: u64 = 24 * H;
    const Y: u64 = 365 * D;

    #[test]
    fn human_duration_boundaries() {
        assert_eq!(hd(0), "0s");
        assert_eq!(hd(5), "5s");
        assert_eq!(hd(59), "59s");
        assert_eq!(hd(60), "60s");
        assert_eq!(hd(2 * M - 1), "119s");
        assert_eq!(hd(2 * M), "2m");
        assert_eq!(hd(3 * M + 12), "3m12s");
        assert_eq!(hd(9 * M + 59), "9m59s");
        assert_eq!(hd(10 * M), "10m");
        assert_eq!(hd(10 * M + 30), "10m");
        assert_eq!(hd(3 * H - 1), "179m");
        assert_eq!(hd(3 * H), "3h");
        assert_eq!(hd(3 * H + 30 * M), "3h30m");
        assert_eq!(hd(7 * H + 59 * M), "7h59m");
        assert_eq!(hd(8 * H), "8h");
        assert_eq!(hd(8 * H + 59 * M), "8h");
        assert_eq!(hd(47 * H), "47h");
        assert_eq!(hd(48 * H), "2d");
        assert_eq!(hd(2 * D + 3 * H), "2d3h");
        assert_eq!(hd(7 * D + 23 * H), "7d23h");
        assert_eq!(hd(8 * D), "8d");
        assert_eq!(hd(8 * D + 5 * H), "8d");
        assert_eq!(hd(2 * Y - 1), "729d");
        assert_eq!(hd(2 * Y), "2y");
        assert_eq!(hd(2 * Y + 40 * D), "2y40d");
        assert_eq!(hd(8 * Y - D), "7y364d");
        assert_eq!(hd(8 * Y), "8y");
        assert_eq!(hd(20 * Y + 100 * D), "20y");
        // Sub-second parts are truncated.
        assert_eq!(human_duration(Duration::from_millis(119_999)), "119s");
    }

    #[test]
    fn clock_skew_and_unset_times() {
        assert_eq!(human_seconds(-1), "0s");
        assert_eq!(human_seconds(-2), "<invalid>");
        let now: Timestamp = "2024-01-01T00:00:10Z".parse().unwrap();
        assert_eq!(since(None, now), "<unknown>");
        let later: Timestamp = "2024-01-01T00:00:11.500Z".parse().unwrap();
        assert_eq!(since(Some(later), now), "0s");
        assert_eq!(parse_time(Some(&Value::Null)), None);
        assert_eq!(parse_time(Some(&Value::from(""))), None);
        assert_eq!(parse_time(Some(&Value::from("0001-01-01T00:00:00Z"))), None);
        assert!(parse_time(Some(&Value::from("2024-01-01T00:00:00.123456Z"))).is_some());
        let t = parse_time(Some(&Value::from("2024-01-01T00:00:00.9Z"))).unwrap();
        assert_eq!(rfc3339_seconds(t), "2024-01-01T00:00:00Z");
    }
}
