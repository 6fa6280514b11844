//! Printers of the batch kinds: jobs (status, completions, duration) and cron jobs
//! (schedule, time zone, suspend, active, last schedule).

use jiff::Timestamp;
use serde_json::{json, Value};

use super::duration::{age, between, parse_time, since};
use super::text::{
    arr, at, container_cells, deleting, format_label_selector, int_at, int_of, len_at, name, str_at,
};
use super::{col, Column, Printer, AGE, CONTAINERS, IMAGES, NAME};

const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    super::wide(
        "Selector",
        "string",
        "A label query over pods that should match the pod count.",
    ),
];

pub(crate) static JOBS: Printer = Printer {
    columns: JOB_COLUMNS,
    cells: job_cells,
};

/// Whether the first job condition of this type is True.
fn job_condition(job: &Value, kind: &str) -> bool {
    arr(job, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == kind)
        .is_some_and(|c| str_at(c, "/status") == "True")
}

fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int_at(job, "/status/succeeded");
    let completions = match at(job, "/spec/completions").and_then(int_of) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = int_at(job, "/spec/parallelism");
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let start = parse_time(job.pointer("/status/startTime"));
    let end = parse_time(job.pointer("/status/completionTime"));
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => since(Some(s), now),
        (Some(s), Some(e)) => between(e, s),
    };
    let status = if job_condition(job, "Complete") {
        "Complete"
    } else if job_condition(job, "Failed") {
        "Failed"
    } else if deleting(job) {
        "Terminating"
    } else if job_condition(job, "Suspended") {
        "Suspended"
    } else if job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(at(job, "/spec/template/spec"));
    vec![
        json!(name(job)),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(job, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(job, "/spec/selector"))),
    ]
}

const CRONJOB_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Schedule",
        "string",
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
    ),
    col(
        "Timezone",
        "string",
        "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
    ),
    col(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.",
    ),
    col(
        "Active",
        "integer",
        "A list of pointers to currently running jobs.",
    ),
    col(
        "Last Schedule",
        "string",
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    super::wide(
        "Selector",
        "string",
        "A label query over pods that should match the pod count.",
    ),
];

pub(crate) static CRONJOBS: Printer = Printer {
    columns: CRONJOB_COLUMNS,
    cells: cronjob_cells,
};

fn cronjob_cells(cj: &Value, now: Timestamp) -> Vec<Value> {
    let last = match parse_time(cj.pointer("/status/lastScheduleTime")) {
        Some(t) => since(Some(t), now),
        None => "<none>".to_string(),
    };
    let time_zone = match at(cj, "/spec/timeZone").and_then(Value::as_str) {
        Some(tz) => tz.to_string(),
        None => "<none>".to_string(),
    };
    // Upstream prints the (defaulted to false) flag as the string "True"/"False".
    let suspend = match at(cj, "/spec/suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        _ => "False",
    };
    let (names, images) = container_cells(at(cj, "/spec/jobTemplate/spec/template/spec"));
    vec![
        json!(name(cj)),
        json!(str_at(cj, "/spec/schedule")),
        json!(time_zone),
        json!(suspend),
        json!(len_at(cj, "/status/active")),
        json!(last),
        json!(age(cj, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(
            cj,
            "/spec/jobTemplate/spec/selector"
        ))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-06-01T12:00:00Z".parse().unwrap()
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "nginx", "image": "nginx:1.27"},
            {"name": "sidecar", "image": "busybox"}
        ]}})
    }

    fn job(spec: Value, status: Value) -> Value {
        let mut spec = spec;
        spec["template"] = template();
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}});
        json!({"metadata": {"name": "pi", "creationTimestamp": "2024-06-01T11:00:00Z"},
            "spec": spec, "status": status})
    }

    #[test]
    fn job_statuses_and_completions() {
        let running = job(
            json!({"completions": 3, "parallelism": 1}),
            json!({"startTime": "2024-06-01T11:00:00Z", "active": 1, "succeeded": 1}),
        );
        assert_eq!(
            job_cells(&running, now()),
            vec![
                json!("pi"),
                json!("Running"),
                json!("1/3"),
                json!("60m"),
                json!("60m"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,busybox"),
                json!("batch.kubernetes.io/controller-uid=abc")
            ]
        );

        let complete = job(
            json!({"completions": 1}),
            json!({"startTime": "2024-06-01T11:00:00Z", "completionTime": "2024-06-01T11:00:42Z",
                "succeeded": 1, "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True"},
                    {"type": "Complete", "status": "True"}]}),
        );
        assert_eq!(
            job_cells(&complete, now())[1..4],
            [json!("Complete"), json!("1/1"), json!("42s")]
        );

        let failed = job(
            json!({"completions": 1, "parallelism": 1}),
            json!({"startTime": "2024-06-01T11:00:00Z", "failed": 6, "conditions": [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True"}]}),
        );
        assert_eq!(
            job_cells(&failed, now())[1..3],
            [json!("Failed"), json!("0/1")]
        );

        let failure_target = job(
            json!({}),
            json!({"startTime": "2024-06-01T11:00:00Z", "conditions": [
                {"type": "FailureTarget", "status": "True"}]}),
        );
        assert_eq!(job_cells(&failure_target, now())[1], json!("FailureTarget"));

        let suspended = job(
            json!({"suspend": true, "parallelism": 4}),
            json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
        );
        // No start time: empty duration; no completions: "of N" with parallelism.
        assert_eq!(
            job_cells(&suspended, now())[1..4],
            [json!("Suspended"), json!("0/1 of 4"), json!("")]
        );

        let mut terminating = job(json!({"completions": 2}), json!({"succeeded": 1}));
        terminating["metadata"]["deletionTimestamp"] = json!("2024-06-01T11:59:00Z");
        assert_eq!(job_cells(&terminating, now())[1], json!("Terminating"));

        // A condition that is not True does not count.
        let resumed = job(
            json!({}),
            json!({"conditions": [{"type": "Suspended", "status": "False"}]}),
        );
        assert_eq!(job_cells(&resumed, now())[1], json!("Running"));
    }

    #[test]
    fn cronjob() {
        let cj = json!({
            "metadata": {"name": "backup", "creationTimestamp": "2024-05-31T12:00:00Z"},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template()}}},
            "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": "2024-06-01T11:55:00Z"}
        });
        assert_eq!(
            cronjob_cells(&cj, now()),
            vec![
                json!("backup"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("5m"),
                json!("24h"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,busybox"),
                json!("<none>")
            ]
        );
        let tz = json!({
            "metadata": {"name": "report"},
            "spec": {"schedule": "0 6 * * *", "timeZone": "Europe/Berlin", "suspend": true}
        });
        assert_eq!(
            cronjob_cells(&tz, now())[1..6],
            [
                json!("0 6 * * *"),
                json!("Europe/Berlin"),
                json!("True"),
                json!(0),
                json!("<none>")
            ]
        );
    }
}
