//! A Deployment's status as upstream computes it: replica counts summed over its
//! ReplicaSets, the Available condition (MinimumReplicasAvailable), the Progressing
//! condition (NewReplicaSetCreated, ReplicaSetUpdated, NewReplicaSetAvailable,
//! ProgressDeadlineExceeded, DeploymentPaused/DeploymentResumed) with
//! progressDeadlineSeconds counted from the last progress, and the revision annotation
//! `kubectl rollout status/history` read.

use super::util::{self, max_unavailable, replicas, REVISION};
use super::Controller;
use crate::api::meta;
use crate::api::ApiError;
use crate::server::controllers::replicaset::pods::parse_secs;
use crate::server::informer::builtin;
use serde_json::{json, Value};
use std::time::Duration;

fn count(rs: &Value, field: &str) -> i64 {
    rs["status"][field].as_i64().unwrap_or(0)
}

/// Sets a condition as upstream's `SetDeploymentCondition` does: the same status and
/// reason leave it alone (except ReplicaSetUpdated, whose lastUpdateTime marks
/// progress), a new status starts a new lastTransitionTime.
fn set_condition(
    conds: &mut Vec<Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    let old = conds.iter().position(|c| c["type"] == type_);
    let mut transition = json!(now);
    if let Some(i) = old {
        let c = &mut conds[i];
        if c["status"] == status && c["reason"] == reason {
            if reason == "ReplicaSetUpdated" {
                c["lastUpdateTime"] = json!(now);
                c["message"] = json!(message);
            }
            return;
        }
        if c["status"] == status {
            transition = c["lastTransitionTime"].clone();
        }
        conds.remove(i);
    }
    conds.push(json!({
        "type": type_, "status": status, "lastUpdateTime": now,
        "lastTransitionTime": transition, "reason": reason, "message": message,
    }));
}

impl Controller {
    /// Writes `d`'s status from its ReplicaSets; returns when to look again for the
    /// progress deadline.
    pub(crate) async fn write_status(
        &self,
        d: &Value,
        new: Option<&Value>,
        olds: &[Value],
    ) -> Result<Option<Duration>, ApiError> {
        let want = replicas(d);
        let all: Vec<&Value> = new.into_iter().chain(olds.iter()).collect();
        let sum = |f: &str| all.iter().map(|rs| count(rs, f)).sum::<i64>();
        let (total, ready, available) = (
            sum("replicas"),
            sum("readyReplicas"),
            sum("availableReplicas"),
        );
        let updated = new.map_or(0, |rs| count(rs, "replicas"));
        let mut status = json!({});
        if let Some(g) = d["metadata"]["generation"].as_i64() {
            status["observedGeneration"] = json!(g);
        }
        // omitempty upstream: zero counts are left out.
        for (field, n) in [
            ("replicas", total),
            ("updatedReplicas", updated),
            ("readyReplicas", ready),
            ("availableReplicas", available),
            ("unavailableReplicas", (want - available).max(0)),
        ] {
            if n > 0 {
                status[field] = json!(n);
            }
        }
        if let Some(c) = d["status"]["collisionCount"].as_i64() {
            status["collisionCount"] = json!(c);
        }
        let now = meta::now_rfc3339();
        let mut conds: Vec<Value> = d["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if available >= want - max_unavailable(d) {
            set_condition(
                &mut conds,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                &now,
            );
        } else {
            set_condition(
                &mut conds,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                &now,
            );
        }
        let requeue = self.progress(d, new, &mut conds, (total, updated, ready, available), &now);
        status["conditions"] = Value::Array(conds);

        let revision = new.map(util::revision).filter(|r| *r > 0);
        let uid = meta::uid(d).to_string();
        let r = self
            .registry
            .update_with(
                builtin("apps", "v1", "deployments"),
                meta::namespace(d),
                meta::name(d),
                |x| {
                    if meta::uid(x) != uid {
                        return Err(ApiError::not_found("apps", "deployments", meta::name(d)));
                    }
                    let mut s = status.clone();
                    // A collision found meanwhile must not be lost.
                    if let Some(c) = x["status"]["collisionCount"].as_i64() {
                        s["collisionCount"] = json!(c);
                    }
                    x["status"] = s;
                    if let Some(rev) = revision {
                        util::set_annotation(x, REVISION, rev.to_string());
                    }
                    Ok(())
                },
            )
            .await;
        match r {
            Err(e) if e.code != 404 => Err(e),
            _ => Ok(requeue),
        }
    }

    /// Updates the Progressing condition; returns when the deadline would pass.
    fn progress(
        &self,
        d: &Value,
        new: Option<&Value>,
        conds: &mut Vec<Value>,
        (total, updated, ready, available): (i64, i64, i64, i64),
        now: &str,
    ) -> Option<Duration> {
        let paused = d["spec"]["paused"] == json!(true);
        let current = conds.iter().find(|c| c["type"] == "Progressing").cloned();
        let reason = current
            .as_ref()
            .and_then(|c| c["reason"].as_str())
            .unwrap_or("")
            .to_string();
        if paused {
            if reason != "DeploymentPaused" {
                set_condition(
                    conds,
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused",
                    now,
                );
            }
            return None;
        }
        if reason == "DeploymentPaused" {
            set_condition(
                conds,
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed",
                now,
            );
        }
        let deadline = d["spec"]["progressDeadlineSeconds"].as_i64()?;
        let new_name = new.map(meta::name).unwrap_or("");
        let want = replicas(d);
        let old = &d["status"];
        let was = |f: &str| old[f].as_i64().unwrap_or(0);
        if updated == want && total == want && available >= want && new.is_some() {
            let msg = format!("ReplicaSet {new_name:?} has successfully progressed.");
            set_condition(
                conds,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &msg,
                now,
            );
            return None;
        }
        let progressed = updated > was("updatedReplicas")
            || total - updated < was("replicas") - was("updatedReplicas")
            || ready > was("readyReplicas")
            || available > was("availableReplicas");
        if current.is_none()
            || reason == "DeploymentResumed"
            || (progressed && reason != "ProgressDeadlineExceeded")
        {
            let (reason, msg) = if current.is_none() {
                (
                    "NewReplicaSetCreated",
                    format!("Created new replica set {new_name:?}"),
                )
            } else {
                (
                    "ReplicaSetUpdated",
                    format!("ReplicaSet {new_name:?} is progressing."),
                )
            };
            set_condition(conds, "Progressing", "True", reason, &msg, now);
            return Some(Duration::from_secs(deadline.max(0) as u64 + 1));
        }
        if reason == "ProgressDeadlineExceeded" {
            return None;
        }
        let last = current
            .as_ref()
            .and_then(|c| parse_secs(c["lastUpdateTime"].as_str()?))
            .unwrap_or_else(|| jiff::Timestamp::now().as_second());
        let left = last + deadline - jiff::Timestamp::now().as_second();
        if left < 0 {
            let msg = format!("ReplicaSet {new_name:?} has timed out progressing.");
            set_condition(
                conds,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &msg,
                now,
            );
            None
        } else {
            Some(Duration::from_secs(left as u64 + 1))
        }
    }
}
