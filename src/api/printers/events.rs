//! The event printer, for core `v1` events and `events.k8s.io/v1` events (one object
//! upstream, two field namings): last/first seen, object, source, count.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::duration::{parse_time, since};
use super::text::{at, int_at, int_of, name, str_at};
use super::{col, wide, Column, Printer, NAME};

const EVENT_COLUMNS: &[Column] = &[
    col(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    col(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    col(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    ),
    wide(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    col(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        priority: 1,
        ..NAME
    },
];

pub(crate) static EVENTS: Printer = Printer {
    columns: EVENT_COLUMNS,
    cells: core_event_cells,
};

/// `events.k8s.io/v1` events are the same objects upstream (one internal type), printed
/// with the same columns from their renamed fields.
pub(crate) static EVENTS_V1: Printer = Printer {
    columns: EVENT_COLUMNS,
    cells: events_v1_cells,
};

/// Where each printed field lives in one of the two event schemas.
struct EventFields {
    first: &'static str,
    last: &'static str,
    count: &'static str,
    regarding: &'static str,
    message: &'static str,
    source: &'static str,
    reporting_controller: &'static str,
}

const CORE_EVENT: EventFields = EventFields {
    first: "/firstTimestamp",
    last: "/lastTimestamp",
    count: "/count",
    regarding: "/involvedObject",
    message: "/message",
    source: "/source",
    reporting_controller: "/reportingComponent",
};

const EVENTS_V1_EVENT: EventFields = EventFields {
    first: "/deprecatedFirstTimestamp",
    last: "/deprecatedLastTimestamp",
    count: "/deprecatedCount",
    regarding: "/regarding",
    message: "/note",
    source: "/deprecatedSource",
    reporting_controller: "/reportingController",
};

fn core_event_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    event_cells(ev, now, &CORE_EVENT)
}

fn events_v1_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    event_cells(ev, now, &EVENTS_V1_EVENT)
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() {
        b
    } else {
        a
    }
}

fn event_cells(ev: &Value, now: Timestamp, f: &EventFields) -> Vec<Value> {
    // New-style events only carry eventTime; series events report their last sighting.
    let first_seen = match parse_time(ev.pointer(f.first)) {
        Some(t) => since(Some(t), now),
        None => since(parse_time(ev.pointer("/eventTime")), now),
    };
    let mut last_seen = match parse_time(ev.pointer(f.last)) {
        Some(t) => since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = at(ev, f.count).and_then(int_of).unwrap_or(0);
    if let Some(series) = at(ev, "/series") {
        last_seen = since(parse_time(series.pointer("/lastObservedTime")), now);
        count = int_at(series, "/count");
    } else if count == 0 {
        count = 1;
    }

    let regarding = at(ev, f.regarding).unwrap_or(&Value::Null);
    let kind = str_at(regarding, "/kind").to_lowercase();
    let object_name = str_at(regarding, "/name");
    let target = if object_name.is_empty() {
        kind
    } else {
        format!("{kind}/{object_name}")
    };

    let component = first_non_empty(
        str_at(ev, &format!("{}/component", f.source)),
        str_at(ev, f.reporting_controller),
    );
    let instance = first_non_empty(
        str_at(ev, &format!("{}/host", f.source)),
        str_at(ev, "/reportingInstance"),
    );
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };

    vec![
        json!(last_seen),
        json!(str_at(ev, "/type")),
        json!(str_at(ev, "/reason")),
        json!(target),
        json!(str_at(regarding, "/fieldPath")),
        json!(source),
        json!(str_at(ev, f.message).trim()),
        json!(first_seen),
        json!(count),
        json!(name(ev)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn core_event_last_seen_and_object() {
        let ev = json!({
            "metadata": {"name": "web-0.17d3", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "default",
                "fieldPath": "spec.containers{app}"},
            "reason": "BackOff",
            "message": "Back-off restarting failed container\n",
            "source": {"component": "kubelet", "host": "pi-1"},
            "firstTimestamp": "2024-06-01T11:00:00Z",
            "lastTimestamp": "2024-06-01T11:58:00Z",
            "count": 12,
            "type": "Warning"
        });
        assert_eq!(
            core_event_cells(&ev, now()),
            vec![
                json!("2m"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-0"),
                json!("spec.containers{app}"),
                json!("kubelet, pi-1"),
                json!("Back-off restarting failed container"),
                json!("60m"),
                json!(12),
                json!("web-0.17d3")
            ]
        );
    }

    #[test]
    fn core_event_without_timestamps_uses_event_time_and_series() {
        // Written by a new-style recorder: eventTime, reporting fields, no count.
        let ev = json!({
            "metadata": {"name": "n.1"},
            "involvedObject": {"kind": "Node"},
            "reason": "Starting",
            "message": "Starting kubelet.",
            "eventTime": "2024-06-01T11:59:50.123456Z",
            "reportingComponent": "k3rs-agent",
            "reportingInstance": "pi-2",
            "type": "Normal"
        });
        let c = core_event_cells(&ev, now());
        assert_eq!(c[0], json!("9s"));
        assert_eq!(c[3], json!("node"));
        assert_eq!(c[5], json!("k3rs-agent, pi-2"));
        assert_eq!(c[7], json!("9s"));
        assert_eq!(c[8], json!(1));

        let mut series = ev.clone();
        series["series"] = json!({"count": 5, "lastObservedTime": "2024-06-01T11:59:58.000000Z"});
        let c = core_event_cells(&series, now());
        assert_eq!(c[0], json!("2s"));
        assert_eq!(c[8], json!(5));

        let nothing = json!({"metadata": {"name": "e"}});
        let c = core_event_cells(&nothing, now());
        assert_eq!(c[0], json!("<unknown>"));
        assert_eq!(c[3], json!(""));
    }

    #[test]
    fn events_k8s_io_fields() {
        let ev = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "web.1"},
            "regarding": {"kind": "Deployment", "name": "web"},
            "note": "Scaled up replica set web-5d8f to 3",
            "reason": "ScalingReplicaSet",
            "type": "Normal",
            "reportingController": "deployment-controller",
            "reportingInstance": "",
            "deprecatedFirstTimestamp": "2024-06-01T10:00:00Z",
            "deprecatedLastTimestamp": "2024-06-01T11:00:00Z",
            "deprecatedCount": 2,
            "deprecatedSource": {"component": "deployment-controller"}
        });
        assert_eq!(
            events_v1_cells(&ev, now()),
            vec![
                json!("60m"),
                json!("Normal"),
                json!("ScalingReplicaSet"),
                json!("deployment/web"),
                json!(""),
                json!("deployment-controller"),
                json!("Scaled up replica set web-5d8f to 3"),
                json!("120m"),
                json!(2),
                json!("web.1")
            ]
        );
    }
}
