//! Printer of PriorityClasses: NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY, as
//! upstream's printPriorityClass.

use jiff::Timestamp;
use serde_json::{json, Value};

use super::duration::age;
use super::text::{name, str_at};
use super::{col, Column, Printer, AGE, NAME};

const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Value",
        "integer",
        "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec.",
    ),
    col(
        "Global-Default",
        "boolean",
        "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.",
    ),
    AGE,
    col(
        "PreemptionPolicy",
        "string",
        "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset.",
    ),
];

pub(crate) static PRIORITYCLASSES: Printer = Printer {
    columns: PRIORITY_CLASS_COLUMNS,
    cells: priority_class_cells,
};

fn priority_class_cells(pc: &Value, now: Timestamp) -> Vec<Value> {
    // Objects written before defaulting existed carry no policy: upstream's default.
    let policy = match str_at(pc, "/preemptionPolicy") {
        "" => "PreemptLowerPriority",
        p => p,
    };
    vec![
        json!(name(pc)),
        json!(pc["value"].as_i64().unwrap_or(0)),
        json!(pc["globalDefault"].as_bool().unwrap_or(false)),
        json!(age(pc, now)),
        json!(policy),
    ]
}
