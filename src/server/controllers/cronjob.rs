//! The CronJob controller, as upstream's (v2): creates a Job named
//! `<cronjob>-<scheduled minute since the epoch>` at each scheduled time of the cron
//! schedule in `spec.timeZone`, honours suspend, startingDeadlineSeconds and
//! concurrencyPolicy (Allow, Forbid, Replace), keeps `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime`, and deletes finished Jobs beyond the
//! successful/failed history limits.

use super::cron::{time_zone, Schedule};
use super::job::is_job_finished;
use super::owned::{
    condition_true, controller_ref, delete_object, from_template, owned_by, parse_time,
    ControllerError, EventRecorder,
};
use crate::api::meta;
use crate::server::informer::{builtin, run_controller, Informer, Informers, ObjectKey, WorkQueue};
use crate::server::registry::{Registry, WriteOptions};
use jiff::Timestamp;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const COMPONENT: &str = "cronjob-controller";
/// The annotation upstream puts on a Job with the time it was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this get upstream's TooManyMissedTimes warning.
const MISSED_WARNING: usize = 100;

struct CronJobController {
    registry: Registry,
    events: EventRecorder,
    cronjobs: Informer,
    jobs: Informer,
    queue: WorkQueue<ObjectKey>,
}

/// Runs the CronJob controller until `shutdown` flips.
pub async fn run(informers: Informers, shutdown: watch::Receiver<bool>) {
    let cronjobs = informers.get(builtin("batch", "v1", "cronjobs"));
    let jobs = informers.get(builtin("batch", "v1", "jobs"));
    let queue = WorkQueue::new();
    super::owned::enqueue_self(&cronjobs, queue.clone(), &shutdown);
    super::owned::enqueue_owners(&jobs, cronjobs.clone(), "CronJob", queue.clone(), &shutdown);
    cronjobs.wait_synced().await;
    jobs.wait_synced().await;
    for c in cronjobs.list_all() {
        queue.add(ObjectKey::of(&c));
    }
    let ctl = Arc::new(CronJobController {
        registry: informers.registry().clone(),
        events: EventRecorder::new(informers.registry().clone(), COMPONENT),
        cronjobs,
        jobs,
        queue: queue.clone(),
    });
    queue.shut_down_on(shutdown.clone());
    run_controller("cronjob", queue, 1, move |key: ObjectKey| {
        let ctl = ctl.clone();
        async move { ctl.sync(&key).await }
    })
    .await;
}

/// The ObjectReference of a Job in `status.active`.
fn job_ref(job: &Value) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "namespace": meta::namespace(job), "name": meta::name(job), "uid": meta::uid(job),
        "resourceVersion": job["metadata"]["resourceVersion"],
    })
}

/// The most recent scheduled time in (`earliest`, `now`] and how many there were.
pub fn most_recent(
    schedule: &Schedule,
    tz: &jiff::tz::TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, usize) {
    let (mut t, mut latest, mut count) = (earliest, None, 0usize);
    while let Some(n) = schedule.next_after(tz, t) {
        if n > now {
            break;
        }
        latest = Some(n);
        count += 1;
        t = n;
        // Bounded: a year of minutes is more than any real backlog.
        if count > 600_000 {
            break;
        }
    }
    (latest, count)
}

/// The name of the Job for a scheduled time: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

impl CronJobController {
    async fn event(&self, cj: &Value, type_: &str, reason: &str, msg: &str) {
        if type_ == "Warning" {
            self.events.warning(cj, reason, msg).await;
        } else {
            self.events.normal(cj, reason, msg).await;
        }
    }

    async fn sync(&self, key: &ObjectKey) -> Result<(), ControllerError> {
        let Some(cj) = self.cronjobs.get(&key.namespace, &key.name) else {
            return Ok(());
        };
        if meta::is_deleting(&cj) {
            return Ok(());
        }
        let (ns, uid) = (meta::namespace(&cj), meta::uid(&cj));
        let spec = &cj["spec"];
        let jobs = owned_by(&self.jobs, ns, uid);
        let now = Timestamp::now();
        let mut status = match cj["status"].clone() {
            v @ Value::Object(_) => v,
            _ => json!({}),
        };
        let was_active: Vec<String> = status["active"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["uid"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();

        // Jobs that finished since the last look.
        let mut active: Vec<Value> = Vec::new();
        for j in &jobs {
            if !is_job_finished(j) {
                if !meta::is_deleting(j) {
                    // Keep the reference written at creation (as upstream): a fresh one
                    // would rewrite the status on every change of the Job.
                    let known = cj["status"]["active"]
                        .as_array()
                        .and_then(|a| a.iter().find(|r| r["uid"] == meta::uid(j)).cloned());
                    active.push(known.unwrap_or_else(|| job_ref(j)));
                }
                continue;
            }
            if was_active.iter().any(|u| u == meta::uid(j)) {
                let cond = if condition_true(j, "Complete") {
                    "Complete"
                } else {
                    "Failed"
                };
                let msg = format!("Saw completed job: {}, condition: {cond}", meta::name(j));
                self.event(&cj, "Normal", "SawCompletedJob", &msg).await;
                if let Some(done) = j["status"]["completionTime"].as_str() {
                    let newer = status["lastSuccessfulTime"]
                        .as_str()
                        .and_then(parse_time)
                        .is_none_or(|t| parse_time(done).is_some_and(|d| d > t));
                    if newer {
                        status["lastSuccessfulTime"] = json!(done);
                    }
                }
            }
        }
        self.prune_history(&cj, &jobs).await?;

        let mut requeue = None;
        if spec["suspend"].as_bool() != Some(true) {
            requeue = self.schedule(&cj, &mut status, &mut active, now).await?;
        }
        if active.is_empty() {
            if let Some(m) = status.as_object_mut() {
                m.remove("active");
            }
        } else {
            status["active"] = json!(active);
        }
        if status != cj["status"] {
            let uid = uid.to_string();
            let r = self
                .registry
                .update_with(self.cronjobs.resource(), ns, meta::name(&cj), |o| {
                    if meta::uid(o) == uid {
                        o["status"] = status.clone();
                    }
                    Ok(())
                })
                .await;
            match r {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(ControllerError::api("updating cronjob status", e)),
            }
        }
        if let Some(d) = requeue {
            self.queue.add_after(key.clone(), d);
        }
        Ok(())
    }

    /// Starts the Job of the most recent missed time, if any; returns when to look again.
    async fn schedule(
        &self,
        cj: &Value,
        status: &mut Value,
        active: &mut Vec<Value>,
        now: Timestamp,
    ) -> Result<Option<Duration>, ControllerError> {
        let spec = &cj["spec"];
        let schedule = match Schedule::parse(spec["schedule"].as_str().unwrap_or("")) {
            Ok(s) => s,
            Err(e) => {
                self.event(cj, "Warning", "UnparseableSchedule", &e.to_string())
                    .await;
                return Ok(None);
            }
        };
        let tz = match time_zone(spec["timeZone"].as_str()) {
            Ok(tz) => tz,
            Err(e) => {
                self.event(cj, "Warning", "UnknownTimeZone", &e.to_string())
                    .await;
                return Ok(None);
            }
        };
        let created = parse_time(meta::meta_str(cj, "creationTimestamp")).unwrap_or(0);
        let mut earliest = status["lastScheduleTime"]
            .as_str()
            .and_then(parse_time)
            .unwrap_or(created);
        if let Some(sds) = spec["startingDeadlineSeconds"].as_i64() {
            earliest = earliest.max(now.as_second() - sds);
        }
        let earliest = Timestamp::from_second(earliest).unwrap_or(now);
        let (latest, missed) = most_recent(&schedule, &tz, earliest, now);
        let next = schedule
            .next_after(&tz, now)
            .and_then(|n| n.duration_since(now).try_into().ok())
            .map(|d: Duration| d + Duration::from_millis(100));
        if missed > MISSED_WARNING {
            let msg = format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew");
            self.event(cj, "Warning", "TooManyMissedTimes", &msg).await;
        }
        let Some(t) = latest else { return Ok(next) };
        let policy = spec["concurrencyPolicy"].as_str().unwrap_or("Allow");
        if policy == "Forbid" && !active.is_empty() {
            let msg = "Not starting job because prior execution is running and concurrency policy is Forbid";
            self.event(cj, "Normal", "JobAlreadyActive", msg).await;
            return Ok(next);
        }
        if policy == "Replace" {
            for r in active.drain(..) {
                let name = r["name"].as_str().unwrap_or("");
                if let Some(j) = self.jobs.get(meta::namespace(cj), name) {
                    delete_object(&self.registry, &self.jobs, &j)
                        .await
                        .map_err(|e| ControllerError::api("replacing an active job", e))?;
                    self.event(
                        cj,
                        "Normal",
                        "SuccessfulDelete",
                        &format!("Deleted job {name}"),
                    )
                    .await;
                }
            }
        }
        let name = job_name(meta::name(cj), t);
        let mut job = from_template(
            &spec["jobTemplate"],
            "batch/v1",
            "Job",
            meta::namespace(cj),
            controller_ref(cj, "batch/v1", "CronJob"),
        );
        meta::metadata_mut(&mut job).insert("name".into(), json!(name));
        let local = t
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string();
        super::owned::set_annotation(&mut job, SCHEDULED_TIMESTAMP, &local);
        let res = self.jobs.resource();
        match self
            .registry
            .create(res, meta::namespace(cj), job, &WriteOptions::default())
            .await
        {
            Ok(j) => {
                self.event(
                    cj,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created job {name}"),
                )
                .await;
                active.push(job_ref(&j));
            }
            // Created on an earlier pass whose status write was lost: nothing to do.
            Err(e) if e.code == 409 => {}
            Err(e) => {
                let msg = format!("Error creating job: {}", e.message);
                self.event(cj, "Warning", "FailedCreate", &msg).await;
                return Err(ControllerError::api("creating a job", e));
            }
        }
        status["lastScheduleTime"] = json!(super::owned::format_time(t.as_second()));
        Ok(next)
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn prune_history(&self, cj: &Value, jobs: &[Arc<Value>]) -> Result<(), ControllerError> {
        let limits = [
            (
                "Complete",
                cj["spec"]["successfulJobsHistoryLimit"].as_i64(),
            ),
            ("Failed", cj["spec"]["failedJobsHistoryLimit"].as_i64()),
        ];
        for (cond, limit) in limits {
            let Some(limit) = limit else { continue };
            let done: Vec<&Arc<Value>> = jobs
                .iter()
                .filter(|j| condition_true(j, cond) && !meta::is_deleting(j))
                .collect();
            let excess = done.len().saturating_sub(limit.max(0) as usize);
            // `owned_by` lists oldest first.
            for j in done.into_iter().take(excess) {
                delete_object(&self.registry, &self.jobs, j)
                    .await
                    .map_err(|e| ControllerError::api("deleting an old job", e))?;
                let msg = format!("Deleted job {}", meta::name(j));
                self.event(cj, "Normal", "SuccessfulDelete", &msg).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_recent_finds_the_last_missed_time() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let tz = jiff::tz::TimeZone::UTC;
        let (t, n) = most_recent(
            &s,
            &tz,
            "2024-01-01T10:00:00Z".parse().unwrap(),
            "2024-01-01T10:17:00Z".parse().unwrap(),
        );
        assert_eq!(t.unwrap().to_string(), "2024-01-01T10:15:00Z");
        assert_eq!(n, 3);
        let (none, _) = most_recent(
            &s,
            &tz,
            "2024-01-01T10:00:00Z".parse().unwrap(),
            "2024-01-01T10:04:00Z".parse().unwrap(),
        );
        assert!(none.is_none());
    }

    #[test]
    fn job_names_are_minutes_since_the_epoch() {
        let t: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        assert_eq!(job_name("hello", t), "hello-28401121");
    }
}
