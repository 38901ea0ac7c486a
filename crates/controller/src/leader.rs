//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it:
//! every write is guarded by the Lease's resourceVersion; expiry is judged by this process's own
//! clock from when it last saw the record change (no trust in other machines' clocks); a leader
//! that can't renew within the renew deadline stops acting before its lease can expire; the
//! lease is released on shutdown.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Durations of the election (KEDA's: 15 s lease, 10 s renew deadline, 2 s retry).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a lease holds without renewal.
    pub lease: Duration,
    /// A leader that hasn't renewed for this long stops acting (must be < `lease`).
    pub renew_deadline: Duration,
    /// The pause between attempts.
    pub retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// One candidate for the Lease `namespace/name`.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The record last seen and when this process saw it change.
    observed: Option<(LeaseSpec, Instant)>,
    /// Labels of the Lease when this candidate creates it.
    labels: Option<std::collections::BTreeMap<String, String>>,
}

/// The outcome of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    Leading,
    Following,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1)
}

impl Elector {
    /// A candidate called `identity` (unique per process, e.g. the pod name plus a random part).
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing,
            observed: None,
            labels: None,
        }
    }

    /// The same candidate, creating its Lease with `labels`.
    #[must_use]
    pub(crate) fn with_labels(
        mut self,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Self {
        self.labels = Some(labels);
        self
    }

    /// The Lease's name.
    pub(crate) fn lease_name(&self) -> &str {
        &self.name
    }

    /// Runs the election until `shutdown` resolves: `leading` is true exactly while this
    /// candidate may act. On shutdown a held lease is released.
    pub async fn run(
        mut self,
        leading: watch::Sender<bool>,
        mut shutdown: impl Future<Output = ()> + Unpin,
    ) {
        let mut last_renewal: Option<Instant> = None;
        loop {
            // Every Lease call has a deadline: a leader's ends at its renew deadline (it must
            // stop acting then, whatever the API server does), a follower's after a renew
            // deadline too.
            let deadline = match last_renewal {
                Some(renewed) => (renewed + self.timing.renew_deadline)
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
                None => self.timing.renew_deadline,
            };
            let attempt = match tokio::time::timeout(deadline, self.try_acquire_or_renew()).await {
                Ok(attempt) => attempt.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {}s", deadline.as_secs_f32())),
            };
            let at = Instant::now();
            match attempt {
                Ok(Attempt::Leading) => {
                    if last_renewal.is_none() {
                        tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                    }
                    last_renewal = Some(at);
                    leading.send_replace(true);
                }
                Ok(Attempt::Following) => {
                    if last_renewal.take().is_some() {
                        tracing::warn!(lease = %self.name, "lost the lease to another instance");
                    }
                    leading.send_replace(false);
                }
                Err(error) => {
                    tracing::warn!(lease = %self.name, %error, "leader election: updating the lease failed");
                    if let Some(renewed) = last_renewal
                        && at.saturating_duration_since(renewed) >= self.timing.renew_deadline
                    {
                        tracing::warn!(lease = %self.name, "could not renew the lease in time; stopping work");
                        last_renewal = None;
                    }
                    if last_renewal.is_none() {
                        leading.send_replace(false);
                    }
                }
            }
            // Leader and followers both try every retry period (as client-go); a leader wakes
            // at its renew deadline at the latest, to stop acting in time.
            let sleep = tokio::time::sleep(match last_renewal {
                Some(renewed) => self.timing.retry.min(
                    (renewed + self.timing.renew_deadline)
                        .saturating_duration_since(Instant::now()),
                ),
                None => self.timing.retry,
            });
            tokio::select! {
                () = sleep => {}
                () = &mut shutdown => break,
            }
            if let Some(renewed) = last_renewal
                && Instant::now().saturating_duration_since(renewed) >= self.timing.renew_deadline
            {
                tracing::warn!(lease = %self.name, "renew deadline passed; stopping work");
                last_renewal = None;
                leading.send_replace(false);
            }
        }
        let was_leading = *leading.borrow();
        leading.send_replace(false);
        if was_leading {
            match tokio::time::timeout(
                self.timing.retry.max(Duration::from_secs(5)),
                self.release(),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.name, %error, "releasing the lease failed");
                }
                Err(_) => tracing::warn!(lease = %self.name, "releasing the lease timed out"),
            }
        }
    }

    fn expired(&self, spec: &LeaseSpec, at: Instant) -> bool {
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        if holder.is_empty() {
            return true;
        }
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        match &self.observed {
            Some((seen, since)) if seen == spec => at.saturating_duration_since(*since) >= duration,
            // A changed record: its lease starts now, by this process's clock.
            _ => false,
        }
    }

    /// One attempt to take or renew the Lease (a write guarded by its resourceVersion).
    pub(crate) async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let at = Instant::now();
        let lease_seconds = seconds(self.timing.lease);
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    labels: self.labels.clone(),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(lease_seconds),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observed = created.spec.map(|s| (s, at));
                    Ok(Attempt::Leading)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Following),
                Err(error) => Err(error),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !mine && !self.expired(&spec, at) {
            if self.observed.as_ref().map(|(seen, _)| seen) != Some(&spec) {
                self.observed = Some((spec, at));
            }
            return Ok(Attempt::Following);
        }
        let mut next = spec.clone();
        if !mine {
            next.holder_identity = Some(self.identity.clone());
            next.acquire_time = Some(now());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        next.lease_duration_seconds = Some(lease_seconds);
        next.renew_time = Some(now());
        let mut updated = current;
        updated.spec = Some(next);
        // `replace` sends the resourceVersion read above: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &updated)
            .await
        {
            Ok(written) => {
                self.observed = written.spec.map(|s| (s, at));
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Following),
            Err(error) => Err(error),
        }
    }

    /// Gives the lease up so that another instance takes over at once.
    async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut current) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = current.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        self.api
            .replace(&self.name, &PostParams::default(), &current)
            .await?;
        tracing::info!(lease = %self.name, "released the lease");
        Ok(())
    }
}
