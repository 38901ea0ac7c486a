//! Several replicas sharing the ScaledJobs (`jobtide operator --sharded`): each replica holds a
//! member Lease of its own, renewed as leader election renews its Lease (a write guarded by the
//! resourceVersion), and lists the group's member Leases every round. Which ScaledJobs a replica
//! acts on, and when, is decided by [`jobtide_core::shards`] from those rounds; this is the I/O.
//!
//! ```text
//!  every retry period:  renew own Lease ─► list the group's Leases ─► Membership::round
//!                                                                        │ Standing
//!  operator: Acting(members) ─► controller on the ScaledJobs owner(ns, name, members) = me
//!            anything else or another member set ─► stop acting (then start on the new set)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobtide_core::shards::{self, MemberLease, Membership, Standing};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::leader::{Attempt, Elector, Timing};

/// Label on member Leases: the group (`--leader-election-id`) they belong to.
pub const GROUP_LABEL: &str = "jobtide.io/lease-group";

/// A member Lease nobody renewed for this many lease durations (by this replica's observation)
/// is a dead replica's: it is deleted.
const ABANDONED_AFTER_LEASES: u32 = 4;

/// The members a replica acts among: it acts on the ScaledJobs it owns among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// This replica's identity.
    pub me: String,
    /// Every live member, this replica included.
    pub all: BTreeSet<String>,
}

impl Members {
    /// Whether this replica owns the ScaledJob `namespace/name`.
    pub fn owns(&self, namespace: &str, name: &str) -> bool {
        shards::owner(namespace, name, &self.all) == Some(self.me.as_str())
    }
}

/// The group name is not usable: it names Leases and is a label value.
#[derive(Debug, thiserror::Error)]
#[error(
    "the lease group {0:?} must be 1-46 lowercase letters, digits and '-', starting and ending \
     with a letter or digit (it prefixes member Lease names and is a label value)"
)]
pub struct InvalidGroup(String);

/// One replica's membership in a group.
#[derive(Debug)]
pub struct Sharding {
    own: Elector,
    api: Api<Lease>,
    group: String,
    identity: String,
    timing: Timing,
    membership: Membership,
}

fn valid_group(group: &str) -> bool {
    let bytes = group.as_bytes();
    (1..=46).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

impl Sharding {
    /// The replica `identity` (unique per process) in the group `group` of `namespace`: its
    /// member Lease is `<group>-<key of identity>`, labelled with the group.
    pub fn new(
        client: Client,
        namespace: &str,
        group: &str,
        identity: &str,
        timing: Timing,
    ) -> Result<Self, InvalidGroup> {
        if !valid_group(group) {
            return Err(InvalidGroup(group.to_owned()));
        }
        let name = format!("{group}-{}", shards::member_key(identity));
        let own = Elector::new(client.clone(), namespace, &name, identity, timing)
            .with_labels(BTreeMap::from([(GROUP_LABEL.to_owned(), group.to_owned())]));
        Ok(Self {
            own,
            api: Api::namespaced(client, namespace),
            group: group.to_owned(),
            identity: identity.to_owned(),
            timing,
            membership: Membership::new(
                identity,
                shards::Timing {
                    lease: timing.lease,
                    renew_deadline: timing.renew_deadline,
                },
            ),
        })
    }

    /// Renews this replica's Lease, then lists the group's.
    async fn try_round(&mut self) -> Result<Vec<MemberLease>, String> {
        match self.own.try_acquire_or_renew().await {
            Ok(Attempt::Leading) => {}
            Ok(Attempt::Following) => {
                return Err(format!(
                    "the member Lease {} is held by another process (two replicas named {:?}?)",
                    self.own.lease_name(),
                    self.identity
                ));
            }
            Err(error) => return Err(format!("renewing the member Lease: {error}")),
        }
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{GROUP_LABEL}={}", self.group)))
            .await
            .map_err(|error| format!("listing the member Leases: {error}"))?;
        Ok(list
            .items
            .into_iter()
            .map(|lease| {
                let spec = lease.spec.unwrap_or_default();
                MemberLease {
                    name: lease.metadata.name.unwrap_or_default(),
                    holder: spec.holder_identity,
                    version: lease.metadata.resource_version.unwrap_or_default(),
                    duration: Duration::from_secs(
                        u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
                    ),
                }
            })
            .collect())
    }

    /// Deletes the member Leases of replicas gone for [`ABANDONED_AFTER_LEASES`] lease durations
    /// (guarded by the version seen: a late renewal wins).
    async fn collect_abandoned(&self, now: Instant) {
        let after = self.timing.lease * ABANDONED_AFTER_LEASES;
        for (name, version) in self.membership.abandoned(now, after) {
            if name == self.own.lease_name() {
                continue;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: Some(version),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match self.api.delete(&name, &params).await {
                Ok(_) => tracing::info!(lease = %name, "deleted an abandoned member Lease"),
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                Err(error) => {
                    tracing::warn!(lease = %name, %error, "deleting an abandoned member Lease failed");
                }
            }
        }
    }

    fn publish(&self, acting: &watch::Sender<Option<Arc<Members>>>, standing: &Standing) {
        let next = match standing {
            Standing::Acting(all) => Some(Arc::new(Members {
                me: self.identity.clone(),
                all: all.clone(),
            })),
            Standing::Joining { .. } | Standing::Idle => None,
        };
        acting.send_if_modified(|current| {
            if *current == next {
                return false;
            }
            match (&next, current.is_some()) {
                (Some(members), _) => tracing::info!(
                    lease = %self.own.lease_name(),
                    members = members.all.len(),
                    "acting on this replica's share of the ScaledJobs"
                ),
                (None, true) => tracing::warn!(
                    lease = %self.own.lease_name(),
                    ?standing,
                    "stopped acting"
                ),
                (None, false) => {}
            }
            *current = next;
            true
        });
    }

    /// Runs the rounds until `stop` resolves: `acting` holds the members while this replica may
    /// act (`None` otherwise). At the end the member Lease is deleted, so that the others take
    /// this replica's ScaledJobs at once; `stop` must resolve only once this replica stopped
    /// acting.
    pub async fn run(
        mut self,
        acting: watch::Sender<Option<Arc<Members>>>,
        stop: impl Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        loop {
            let started = Instant::now();
            // Every round has a deadline: a replica that acts must stop at its renew deadline
            // whatever the API server does.
            let deadline = self
                .membership
                .valid_until()
                .map_or(self.timing.renew_deadline, |until| {
                    until.saturating_duration_since(started)
                })
                .max(Duration::from_millis(1));
            let listed = match tokio::time::timeout(deadline, self.try_round()).await {
                Ok(Ok(listed)) => Some(listed),
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.own.lease_name(), %error, "membership round failed");
                    None
                }
                Err(_) => {
                    tracing::warn!(lease = %self.own.lease_name(),
                        "membership round: no answer within {}s", deadline.as_secs_f32());
                    None
                }
            };
            let finished = Instant::now();
            let standing = self.membership.round(started, finished, listed.as_deref());
            self.publish(&acting, &standing);
            if listed.is_some() {
                let _ =
                    tokio::time::timeout(self.timing.retry, self.collect_abandoned(Instant::now()))
                        .await;
            }
            // Wake for the next round, and at the renew deadline or the end of the wait to
            // join, whichever comes first.
            let now = Instant::now();
            let mut wake = self.timing.retry;
            if let Some(until) = self.membership.valid_until() {
                wake = wake.min(until.saturating_duration_since(now));
            }
            if let Standing::Joining { until } = standing {
                wake = wake.min(until.saturating_duration_since(now));
            }
            tokio::select! {
                () = tokio::time::sleep(wake) => {}
                () = &mut stop => break,
            }
            let standing = self.membership.standing(Instant::now());
            self.publish(&acting, &standing);
        }
        acting.send_replace(None);
        // Deleted rather than released: a replica's Lease is named after it, and a released
        // one would stay behind after its pod is gone.
        let lease = self.own.lease_name().to_owned();
        let deleted = tokio::time::timeout(
            self.timing.retry.max(Duration::from_secs(5)),
            self.api.delete(&lease, &DeleteParams::default()),
        )
        .await;
        match deleted {
            Ok(Ok(_)) => tracing::info!(%lease, "deleted the member Lease"),
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
            Ok(Err(error)) => tracing::warn!(%lease, %error, "deleting the member Lease failed"),
            Err(_) => tracing::warn!(%lease, "deleting the member Lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_must_fit_lease_names_and_label_values() {
        for good in ["jobtide-operator", "a", "x1-2"] {
            assert!(valid_group(good), "{good}");
        }
        let long = "a".repeat(47);
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", "a/b", long.as_str()] {
            assert!(!valid_group(bad), "{bad:?}");
        }
    }
}
