//! The Job controller, as upstream's: runs pods until `completions` succeeded (or, with no
//! completions, until one succeeded and none runs), never more than `parallelism` at
//! once; Indexed completion mode; backoffLimit (failed pods, plus container restarts
//! with restartPolicy OnFailure) with upstream's replacement back-off;
//! activeDeadlineSeconds; podFailurePolicy (FailJob, Ignore, Count); podReplacementPolicy;
//! suspend; the conditions of 1.31+ (FailureTarget/SuccessCriteriaMet first, then
//! Failed/Complete once no pod is left running); and ttlSecondsAfterFinished.

use super::job_rules::{self, FailureAction};
use super::owned::{
    condition_true, create_pod, delete_object, format_time, is_active, is_finished, is_ready,
    now_secs, owned_by, parse_time, phase, ControllerError, EventRecorder,
};
use crate::api::meta;
use crate::server::informer::{builtin, run_controller, Informer, Informers, ObjectKey, WorkQueue};
use crate::server::registry::{DeleteOptions, Registry};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const COMPONENT: &str = "job-controller";

struct JobController {
    registry: Registry,
    events: EventRecorder,
    jobs: Informer,
    pods: Informer,
    queue: WorkQueue<ObjectKey>,
}

/// Runs the Job controller until `shutdown` flips.
pub async fn run(informers: Informers, shutdown: watch::Receiver<bool>) {
    let jobs = informers.get(builtin("batch", "v1", "jobs"));
    let pods = informers.get(builtin("", "v1", "pods"));
    let queue = WorkQueue::new();
    super::owned::enqueue_self(&jobs, queue.clone(), &shutdown);
    super::owned::enqueue_owners(&pods, jobs.clone(), "Job", queue.clone(), &shutdown);
    jobs.wait_synced().await;
    pods.wait_synced().await;
    for j in jobs.list_all() {
        queue.add(ObjectKey::of(&j));
    }
    let ctl = Arc::new(JobController {
        registry: informers.registry().clone(),
        events: EventRecorder::new(informers.registry().clone(), COMPONENT),
        jobs,
        pods,
        queue: queue.clone(),
    });
    queue.shut_down_on(shutdown.clone());
    run_controller("job", queue, 2, move |key: ObjectKey| {
        let ctl = ctl.clone();
        async move { ctl.sync(&key).await }
    })
    .await;
}

/// A condition as upstream writes it.
fn condition(type_: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": type_, "status": "True", "lastProbeTime": now,
        "lastTransitionTime": now, "reason": reason, "message": message})
}

fn find_condition<'a>(job: &'a Value, type_: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

/// Complete or Failed.
pub fn is_job_finished(job: &Value) -> bool {
    condition_true(job, "Complete") || condition_true(job, "Failed")
}

/// The status conditions with `c` added (replacing one of its type).
fn with_condition(status: &mut Value, c: Value) {
    let mut list: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    list.retain(|x| x["type"] != c["type"]);
    list.push(c);
    status["conditions"] = json!(list);
}

impl JobController {
    async fn sync(&self, key: &ObjectKey) -> Result<(), ControllerError> {
        let Some(job) = self.jobs.get(&key.namespace, &key.name) else {
            return Ok(());
        };
        if meta::is_deleting(&job) {
            return Ok(());
        }
        let now = now_secs();
        if is_job_finished(&job) {
            return self.expire(&job, now).await;
        }
        let (ns, uid) = (meta::namespace(&job), meta::uid(&job));
        let spec = &job["spec"];
        let pods = owned_by(&self.pods, ns, uid);
        let indexed = spec["completionMode"] == "Indexed";
        let completions = spec["completions"].as_i64();
        let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
        let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
        let on_failure = spec["template"]["spec"]["restartPolicy"] == "OnFailure";
        let now_s = format_time(now);

        let active: Vec<&Value> = pods.iter().map(|p| &**p).filter(|p| is_active(p)).collect();
        let unfinished = pods.iter().filter(|p| !is_finished(p)).count();
        let terminating = pods
            .iter()
            .filter(|p| meta::is_deleting(p) && !is_finished(p))
            .count();
        let succeeded_pods: Vec<&Value> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| phase(p) == "Succeeded")
            .collect();
        let failed_pods: Vec<&Value> = pods
            .iter()
            .map(|p| &**p)
            .filter(|p| phase(p) == "Failed")
            .collect();

        let mut fail_job = None;
        let mut failed = 0i64;
        for p in &failed_pods {
            match job_rules::failure_action(&spec["podFailurePolicy"], p) {
                FailureAction::FailJob(msg) => {
                    fail_job.get_or_insert(msg);
                    failed += 1;
                }
                FailureAction::Ignore => {}
                FailureAction::Count => failed += 1,
            }
        }
        let restarts: i64 = if on_failure {
            active
                .iter()
                .flat_map(|p| {
                    p["status"]["containerStatuses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                })
                .filter_map(|s| s["restartCount"].as_i64())
                .sum()
        } else {
            0
        };

        let mut done_indexes: BTreeSet<i64> = BTreeSet::new();
        if indexed {
            let c = completions.unwrap_or(0);
            done_indexes = succeeded_pods
                .iter()
                .filter_map(|p| job_rules::pod_index(p))
                .filter(|i| *i < c)
                .collect();
            done_indexes.extend(
                job_rules::parse_indexes(job["status"]["completedIndexes"].as_str().unwrap_or(""))
                    .into_iter()
                    .filter(|i| *i < c),
            );
        }
        let succeeded = if indexed {
            done_indexes.len() as i64
        } else {
            (succeeded_pods.len() as i64).max(job["status"]["succeeded"].as_i64().unwrap_or(0))
        };

        let mut status = job["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        let suspended = spec["suspend"].as_bool() == Some(true);
        if status["startTime"].is_null() && !suspended {
            status["startTime"] = json!(now_s);
        }
        let start = status["startTime"].as_str().and_then(parse_time);

        // The terminal decision, kept in FailureTarget/SuccessCriteriaMet while pods stop.
        let mut target = find_condition(&job, "FailureTarget")
            .map(|c| (true, c["reason"].clone(), c["message"].clone()))
            .or_else(|| {
                find_condition(&job, "SuccessCriteriaMet")
                    .map(|c| (false, c["reason"].clone(), c["message"].clone()))
            });
        let mut requeue: Option<i64> = None;
        if target.is_none() {
            let deadline = spec["activeDeadlineSeconds"]
                .as_i64()
                .zip(start)
                .map(|(d, s)| s + d);
            let complete = match completions {
                Some(c) => succeeded >= c,
                None => succeeded > 0 && active.is_empty(),
            };
            let failure = if let Some(msg) = fail_job {
                Some(("PodFailurePolicy".to_string(), msg))
            } else if failed + restarts > backoff_limit {
                Some((
                    "BackoffLimitExceeded".into(),
                    "Job has reached the specified backoff limit".into(),
                ))
            } else if deadline.is_some_and(|d| d <= now) && !suspended {
                Some((
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                ))
            } else {
                None
            };
            if let Some((reason, msg)) = failure {
                with_condition(
                    &mut status,
                    condition("FailureTarget", &reason, &msg, &now_s),
                );
                target = Some((true, json!(reason), json!(msg)));
            } else if complete {
                let (reason, msg) = (
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                with_condition(
                    &mut status,
                    condition("SuccessCriteriaMet", reason, msg, &now_s),
                );
                target = Some((false, json!(reason), json!(msg)));
            } else if let Some(d) = deadline {
                requeue = Some(d - now);
            }
        }

        let mut active_now = active.len() as i64;
        if let Some((failing, reason, message)) = &target {
            for p in &active {
                self.delete_pod(&job, p).await?;
            }
            active_now = 0;
            if unfinished == 0 {
                let (reason, message) = (
                    reason.as_str().unwrap_or(""),
                    message.as_str().unwrap_or(""),
                );
                if *failing {
                    with_condition(&mut status, condition("Failed", reason, message, &now_s));
                    self.events.warning(&job, reason, message).await;
                } else {
                    with_condition(&mut status, condition("Complete", reason, message, &now_s));
                    status["completionTime"] = json!(now_s);
                    self.events.normal(&job, "Completed", "Job completed").await;
                }
                if let Some(ttl) = spec["ttlSecondsAfterFinished"].as_i64() {
                    requeue = Some(ttl.max(0));
                }
            }
        } else if suspended {
            for p in &active {
                self.delete_pod(&job, p).await?;
            }
            active_now = 0;
            if !condition_true(&job, "Suspended") {
                with_condition(
                    &mut status,
                    condition("Suspended", "JobSuspended", "Job suspended", &now_s),
                );
                self.events.normal(&job, "Suspended", "Job suspended").await;
            }
        } else {
            if condition_true(&job, "Suspended") {
                let mut c = condition("Suspended", "JobResumed", "Job resumed", &now_s);
                c["status"] = json!("False");
                with_condition(&mut status, c);
                self.events.normal(&job, "Resumed", "Job resumed").await;
            }
            // Replacements wait out the back-off after the last counted failure.
            let counted = failed + restarts;
            let wait = job_rules::last_failure(&failed_pods)
                .map(|t| t + job_rules::backoff_delay(counted) - now)
                .filter(|w| *w > 0 && counted > 0);
            // podReplacementPolicy Failed: no replacement while a pod is still terminating.
            let hold =
                wait.is_some() || (spec["podReplacementPolicy"] == "Failed" && terminating > 0);
            let (created, deleted) = if indexed {
                self.manage_indexed(&job, &active, &done_indexes, parallelism, hold)
                    .await?
            } else {
                let want = match completions {
                    Some(c) => parallelism.min(c - succeeded),
                    None if succeeded > 0 => 0,
                    None => parallelism,
                }
                .max(0);
                self.manage(&job, &active, want, hold).await?
            };
            active_now += created - deleted;
            if let Some(w) = wait {
                requeue = Some(requeue.map_or(w, |r| r.min(w)));
            }
        }

        status["active"] = json!(active_now);
        status["ready"] = json!(active.iter().filter(|p| is_ready(p)).count());
        status["succeeded"] = json!(succeeded);
        status["failed"] = json!(failed_pods.len());
        status["terminating"] = json!(terminating);
        status["uncountedTerminatedPods"] = json!({});
        if indexed {
            status["completedIndexes"] = json!(job_rules::format_indexes(&done_indexes));
        }
        for k in ["active", "succeeded", "failed"] {
            if status[k] == 0 {
                if let Some(m) = status.as_object_mut() {
                    m.remove(k);
                }
            }
        }
        if status != job["status"] {
            let res = self.jobs.resource();
            let uid = uid.to_string();
            let r = self
                .registry
                .update_with(res, ns, meta::name(&job), |o| {
                    if meta::uid(o) == uid {
                        o["status"] = status.clone();
                    }
                    Ok(())
                })
                .await;
            match r {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(ControllerError::api("updating job status", e)),
            }
        }
        if let Some(secs) = requeue {
            self.queue
                .add_after(key.clone(), Duration::from_secs(secs.max(0) as u64 + 1));
        }
        Ok(())
    }

    /// NonIndexed: brings the active pods to `want`. Returns (created, deleted).
    async fn manage(
        &self,
        job: &Value,
        active: &[&Value],
        want: i64,
        hold_creates: bool,
    ) -> Result<(i64, i64), ControllerError> {
        let have = active.len() as i64;
        if have > want {
            // Delete the least useful first: unscheduled, pending, not ready, newest.
            let mut victims: Vec<&Value> = active.to_vec();
            victims.sort_by_key(|p| {
                (
                    !p["spec"]["nodeName"].is_null(),
                    phase(p) != "Pending",
                    is_ready(p),
                    std::cmp::Reverse(meta::meta_str(p, "creationTimestamp").to_string()),
                )
            });
            for p in victims.iter().take((have - want) as usize) {
                self.delete_pod(job, p).await?;
            }
            return Ok((0, have - want));
        }
        if hold_creates {
            return Ok((0, 0));
        }
        for _ in have..want {
            self.create(job, None).await?;
        }
        Ok((want - have, 0))
    }

    /// Indexed: one pod per missing index, at most `parallelism` active; duplicates and
    /// pods of finished or out-of-range indexes go.
    async fn manage_indexed(
        &self,
        job: &Value,
        active: &[&Value],
        done: &BTreeSet<i64>,
        parallelism: i64,
        hold_creates: bool,
    ) -> Result<(i64, i64), ControllerError> {
        let completions = job["spec"]["completions"].as_i64().unwrap_or(0);
        let mut running = BTreeSet::new();
        let mut deleted = 0;
        for p in active {
            match job_rules::pod_index(p) {
                Some(i) if i < completions && !done.contains(&i) && running.insert(i) => {}
                _ => {
                    self.delete_pod(job, p).await?;
                    deleted += 1;
                }
            }
        }
        if hold_creates {
            return Ok((0, deleted));
        }
        let room = (parallelism - running.len() as i64).max(0) as usize;
        let todo = job_rules::missing_indexes(completions, done, &running, room);
        for i in &todo {
            self.create(job, Some(*i)).await?;
        }
        Ok((todo.len() as i64, deleted))
    }

    async fn create(&self, job: &Value, index: Option<i64>) -> Result<(), ControllerError> {
        let pod = job_rules::new_pod(job, index);
        let ns = meta::namespace(job);
        match create_pod(&self.registry, &self.pods, ns, pod).await {
            Ok(p) => {
                let msg = format!("Created pod: {}", meta::name(&p));
                self.events.normal(job, "SuccessfulCreate", &msg).await;
                Ok(())
            }
            Err(e) => {
                let msg = format!("Error creating: {}", e.message);
                self.events.warning(job, "FailedCreate", &msg).await;
                Err(ControllerError::api("creating a job pod", e))
            }
        }
    }

    async fn delete_pod(&self, job: &Value, pod: &Value) -> Result<(), ControllerError> {
        delete_object(&self.registry, &self.pods, pod)
            .await
            .map_err(|e| ControllerError::api("deleting a job pod", e))?;
        let msg = format!("Deleted pod: {}", meta::name(pod));
        self.events.normal(job, "SuccessfulDelete", &msg).await;
        Ok(())
    }

    /// ttlSecondsAfterFinished: deletes a finished Job (and, in the foreground, its pods)
    /// once the time after its completion or failure ran out.
    async fn expire(&self, job: &Value, now: i64) -> Result<(), ControllerError> {
        let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_i64() else {
            return Ok(());
        };
        let finished = job["status"]["completionTime"]
            .as_str()
            .or_else(|| {
                find_condition(job, "Failed").and_then(|c| c["lastTransitionTime"].as_str())
            })
            .and_then(parse_time)
            .unwrap_or(now);
        let left = finished + ttl - now;
        if left > 0 {
            self.queue
                .add_after(ObjectKey::of(job), Duration::from_secs(left as u64));
            return Ok(());
        }
        let opts = DeleteOptions {
            uid: Some(meta::uid(job).to_string()),
            propagation: Some("Foreground".into()),
            ..Default::default()
        };
        let (ns, name) = (meta::namespace(job), meta::name(job));
        tracing::info!(
            namespace = ns,
            job = name,
            "deleting finished job: its ttlSecondsAfterFinished passed"
        );
        match self
            .registry
            .delete(self.jobs.resource(), ns, name, &opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(ControllerError::api("deleting an expired job", e)),
        }
    }
}
