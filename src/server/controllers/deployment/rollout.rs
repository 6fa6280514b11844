//! The moves a Deployment makes, as upstream's deployment controller makes them:
//! RollingUpdate (scale the new ReplicaSet up within maxSurge, old ones down within
//! maxUnavailable, unhealthy old pods first), Recreate (old to zero, wait for their pods
//! to be gone, then the new one up), and the scale-only sync used while paused or when
//! `spec.replicas` changed, which spreads the change over the active ReplicaSets in
//! proportion to their size.

use super::util::{self, fenceposts, int_annotation, max_unavailable, replicas};
use super::Controller;
use crate::api::meta;
use crate::api::selector::LabelSelector;
use crate::api::ApiError;
use crate::server::controllers::replicaset::pods::controller_ref;
use serde_json::{json, Value};
use std::time::Duration;

fn available(rs: &Value) -> i64 {
    // Never more than the ReplicaSet is asked to keep: its status may not have caught
    // up with a scale-down yet, and counting those pods could drop below the minimum.
    rs["status"]["availableReplicas"]
        .as_i64()
        .unwrap_or(0)
        .min(replicas(rs))
}

/// Whether `spec.replicas` changed since the active ReplicaSets were last scaled.
pub fn is_scaling_event(d: &Value, rss: &[Value]) -> bool {
    let want = replicas(d);
    rss.iter()
        .filter(|rs| replicas(rs) > 0)
        .filter_map(|rs| int_annotation(rs, util::DESIRED_REPLICAS))
        .any(|desired| desired != want)
}

/// How many replicas the new ReplicaSet may have now (upstream's `NewRSNewReplicas` for
/// RollingUpdate): up to `replicas + maxSurge` pods in all.
pub fn new_rs_replicas(d: &Value, olds: &[Value], new: Option<&Value>) -> i64 {
    let want = replicas(d);
    let new_now = new.map_or(0, replicas);
    let current: i64 = olds.iter().map(replicas).sum::<i64>() + new_now;
    let max_total = want + fenceposts(d).0;
    if current >= max_total {
        return new_now;
    }
    new_now + (max_total - current).min((want - new_now).max(0))
}

/// Upstream's `DeploymentComplete`, from the ReplicaSets' status.
fn complete(d: &Value, new: &Value, olds: &[Value]) -> bool {
    let want = replicas(d);
    let status = |rs: &Value, f: &str| rs["status"][f].as_i64().unwrap_or(0);
    let total: i64 =
        olds.iter().map(|rs| status(rs, "replicas")).sum::<i64>() + status(new, "replicas");
    status(new, "replicas") == want && total == want && status(new, "availableReplicas") >= want
}

impl Controller {
    /// One RollingUpdate step.
    pub(crate) async fn rolling(
        &self,
        d: &Value,
        rss: Vec<Value>,
    ) -> Result<Option<Duration>, ApiError> {
        let (new, mut olds) = self.new_and_old(d, rss, true).await?;
        let Some(mut new) = new else {
            return Err(ApiError::internal("no new ReplicaSet after creating it"));
        };
        let want = replicas(d);
        let size = if replicas(&new) > want {
            want
        } else {
            new_rs_replicas(d, &olds, Some(&new))
        };
        if size != replicas(&new) {
            new = self.scale_rs(d, &new, size).await?;
            return self.write_status(d, Some(&new), &olds).await;
        }
        if self.scale_down_old(d, &new, &mut olds).await? {
            return self.write_status(d, Some(&new), &olds).await;
        }
        if complete(d, &new, &olds) {
            self.cleanup(d, &olds).await?;
        }
        self.write_status(d, Some(&new), &olds).await
    }

    /// Scales old ReplicaSets down as far as maxUnavailable allows: first pods that
    /// are not available anyway, then available ones down to `replicas −
    /// maxUnavailable`. True when anything was scaled.
    async fn scale_down_old(
        &self,
        d: &Value,
        new: &Value,
        olds: &mut [Value],
    ) -> Result<bool, ApiError> {
        let old_pods: i64 = olds.iter().map(replicas).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all = old_pods + replicas(new);
        let min_available = replicas(d) - max_unavailable(d);
        let new_unavailable = replicas(new) - available(new);
        let max_scaled_down = all - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let mut cleaned = 0;
        for rs in olds.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let unhealthy = replicas(rs) - available(rs);
            if replicas(rs) == 0 || unhealthy <= 0 {
                continue;
            }
            let n = unhealthy.min(max_scaled_down - cleaned);
            *rs = self.scale_rs(d, rs, replicas(rs) - n).await?;
            cleaned += n;
        }
        let available_now: i64 = olds.iter().map(available).sum::<i64>() + available(new);
        let mut budget = (available_now - min_available).max(0);
        let mut scaled = 0;
        for rs in olds.iter_mut() {
            if budget == 0 {
                break;
            }
            if replicas(rs) == 0 {
                continue;
            }
            let n = replicas(rs).min(budget);
            *rs = self.scale_rs(d, rs, replicas(rs) - n).await?;
            budget -= n;
            scaled += n;
        }
        Ok(cleaned + scaled > 0)
    }

    /// One Recreate step.
    pub(crate) async fn recreate(
        &self,
        d: &Value,
        rss: Vec<Value>,
    ) -> Result<Option<Duration>, ApiError> {
        let (new, mut olds) = self.new_and_old(d, rss.clone(), false).await?;
        let mut scaled = false;
        for rs in olds.iter_mut() {
            if replicas(rs) > 0 {
                *rs = self.scale_rs(d, rs, 0).await?;
                scaled = true;
            }
        }
        if scaled || self.old_pods_running(d, &olds) {
            return self.write_status(d, new.as_ref(), &olds).await;
        }
        let (new, olds) = match new {
            Some(n) => (n, olds),
            None => {
                let (n, o) = self.new_and_old(d, rss, true).await?;
                let n =
                    n.ok_or_else(|| ApiError::internal("no new ReplicaSet after creating it"))?;
                (n, o)
            }
        };
        let new = self.scale_rs(d, &new, replicas(d)).await?;
        if complete(d, &new, &olds) {
            self.cleanup(d, &olds).await?;
        }
        self.write_status(d, Some(&new), &olds).await
    }

    /// Whether a pod of an old ReplicaSet still exists and has not finished.
    fn old_pods_running(&self, d: &Value, olds: &[Value]) -> bool {
        let uids: Vec<&str> = olds.iter().map(meta::uid).collect();
        self.pods
            .list(meta::namespace(d), &LabelSelector::default())
            .iter()
            .filter(|p| controller_ref(p).is_some_and(|r| uids.iter().any(|u| r["uid"] == *u)))
            .any(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
    }

    /// The sync of a paused Deployment or one that was resized: scale only.
    pub(crate) async fn sync_scale(
        &self,
        d: &Value,
        rss: Vec<Value>,
    ) -> Result<Option<Duration>, ApiError> {
        let (new, olds) = self.new_and_old(d, rss, false).await?;
        let (new, olds) = self.scale(d, new, olds).await?;
        if d["spec"]["paused"] == json!(true) {
            self.cleanup(d, &olds).await?;
        }
        self.write_status(d, new.as_ref(), &olds).await
    }

    /// Upstream's `scale`: one active ReplicaSet takes the new size; a saturated new one
    /// takes everything; otherwise the change is spread in proportion.
    async fn scale(
        &self,
        d: &Value,
        new: Option<Value>,
        olds: Vec<Value>,
    ) -> Result<(Option<Value>, Vec<Value>), ApiError> {
        let want = replicas(d);
        let has_new = new.is_some();
        let mut all: Vec<Value> = new.into_iter().chain(olds).collect();
        let active: Vec<usize> = (0..all.len()).filter(|&i| replicas(&all[i]) > 0).collect();
        let split = |all: Vec<Value>| {
            let mut it = all.into_iter();
            let new = if has_new { it.next() } else { None };
            (new, it.collect::<Vec<_>>())
        };
        if active.len() <= 1 {
            // The one active, else the new, else the newest old.
            let target = active.first().copied().or(if has_new {
                Some(0)
            } else {
                all.len().checked_sub(1)
            });
            if let Some(i) = target {
                if replicas(&all[i]) != want {
                    all[i] = self.scale_rs(d, &all[i], want).await?;
                }
            }
            return Ok(split(all));
        }
        if has_new && replicas(&all[0]) == want && available(&all[0]) == want {
            for i in active.into_iter().filter(|&i| i != 0) {
                all[i] = self.scale_rs(d, &all[i], 0).await?;
            }
            return Ok(split(all));
        }
        if util::is_rolling(d) {
            let surge = fenceposts(d).0;
            let total: i64 = active.iter().map(|&i| replicas(&all[i])).sum();
            let allowed = if want > 0 { want + surge } else { 0 };
            let to_add = allowed - total;
            let mut order = active.clone();
            // Largest first; ties go to the newer when growing, the older when shrinking.
            order.sort_by(|&a, &b| {
                replicas(&all[b]).cmp(&replicas(&all[a])).then_with(|| {
                    let (ta, tb) = (
                        meta::meta_str(&all[a], "creationTimestamp"),
                        meta::meta_str(&all[b], "creationTimestamp"),
                    );
                    if to_add > 0 {
                        tb.cmp(ta)
                    } else {
                        ta.cmp(tb)
                    }
                })
            });
            let mut sizes: Vec<(usize, i64)> = Vec::new();
            let mut added = 0;
            for &i in &order {
                let p = proportion(&all[i], d, to_add, added);
                sizes.push((i, replicas(&all[i]) + p));
                added += p;
            }
            if let Some(first) = sizes.first_mut() {
                first.1 = (first.1 + to_add - added).max(0);
            }
            for (i, size) in sizes {
                all[i] = self.scale_rs(d, &all[i], size.max(0)).await?;
            }
        }
        Ok(split(all))
    }
}

/// How much of `to_add` (negative when shrinking) a ReplicaSet takes: its share by the
/// max-replicas annotation, within what is left to hand out.
fn proportion(rs: &Value, d: &Value, to_add: i64, added: i64) -> i64 {
    if replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn fraction(rs: &Value, d: &Value) -> i64 {
    let want = replicas(d);
    if want == 0 {
        return -replicas(rs);
    }
    let target = want + fenceposts(d).0;
    let annotated = int_annotation(rs, util::MAX_REPLICAS)
        .unwrap_or_else(|| d["status"]["replicas"].as_i64().unwrap_or(0));
    if annotated <= 0 {
        return 0;
    }
    let size = (replicas(rs) * target + annotated - 1) / annotated;
    size - replicas(rs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(replicas: i64, surge: &str, unavailable: &str) -> Value {
        json!({"spec": {"replicas": replicas, "strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}})
    }

    fn rs(replicas: i64, max_replicas: i64) -> Value {
        json!({"metadata": {"annotations": {util::MAX_REPLICAS: max_replicas.to_string()}},
               "spec": {"replicas": replicas}})
    }

    #[test]
    fn new_replica_set_grows_within_max_surge() {
        let dep = d(4, "25%", "25%");
        let olds = [rs(4, 5)];
        assert_eq!(new_rs_replicas(&dep, &olds, None), 1);
        assert_eq!(new_rs_replicas(&dep, &olds, Some(&rs(1, 5))), 1);
        assert_eq!(new_rs_replicas(&dep, &[rs(2, 5)], Some(&rs(1, 5))), 3);
    }

    #[test]
    fn resize_mid_rollout_is_shared_in_proportion() {
        // 10 replicas, surge 3: old 8 + new 5 = 13 = max; resize to 20 (surge 5, max 25).
        let dep = d(20, "25%", "25%");
        let (old, new) = (rs(8, 13), rs(5, 13));
        let to_add = 25 - 13;
        let a = proportion(&old, &dep, to_add, 0);
        let b = proportion(&new, &dep, to_add, a);
        assert_eq!((a, b), (8, 4), "ceil(8*25/13)-8 = 8, then what is left");
    }

    #[test]
    fn scaling_event_is_a_changed_desired_replicas_annotation() {
        let mut r = rs(3, 4);
        util::set_annotation(&mut r, util::DESIRED_REPLICAS, "3".into());
        assert!(!is_scaling_event(
            &d(3, "25%", "25%"),
            std::slice::from_ref(&r)
        ));
        assert!(is_scaling_event(&d(5, "25%", "25%"), &[r]));
    }
}
