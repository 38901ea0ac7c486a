//! Several replicas sharing the ScaledJobs, the pure parts: which live member owns a ScaledJob,
//! which member Leases are live, and when a replica may act.
//!
//! Each replica holds one `coordination.k8s.io` Lease of its own (its *member Lease*) and lists
//! the others every round. A ScaledJob belongs to the live member that ranks highest for it
//! ([`owner`], rendezvous hashing): when a member joins or leaves, only the ScaledJobs it gains
//! or loses move. [`Membership`] turns the rounds into a [`Standing`].
//!
//! # Guarantees
//! Two replicas never act on one ScaledJob at the same time, provided the replicas' clocks run at
//! the same *rate* (their wall clocks may differ by any amount: no timestamp of another machine
//! is ever compared with this one's, as client-go's leader election):
//! - A replica acts only while its last fully successful round (its Lease renewed, the members
//!   listed) *started* less than `renew_deadline` ago, on the member set of that round.
//! - Another replica judges a member Lease expired only once it has seen the same record for
//!   `lease` (> `renew_deadline`) by its own clock: by then the member has stopped acting.
//! - A replica that starts acting (a new member, or one whose rounds failed for
//!   `renew_deadline`) waits `lease` after the round that listed it: by then every other
//!   replica has either listed it (and given up what it now owns) or stopped acting. It skips
//!   the wait when no other member Lease exists at all: any replica listing later sees it and
//!   waits itself.
//!
//! # Caveats
//! A request sent before a replica stopped acting may reach the API server after another replica
//! started (the margin is `lease - renew_deadline`, 5 s with the defaults), as with any
//! Lease-based election.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::dispatch::name::fnv1a_64;

/// Murmur3's 64-bit finalizer: every input bit reaches every output bit (FNV-1a alone barely
/// mixes its last bytes, and member names often differ only there).
fn mix(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// The rank of `member` for the ScaledJob `namespace/name` (stable across releases and
/// machines: FNV-1a 64 of `namespace \0 name \0 member`, finalized).
fn rank(namespace: &str, name: &str, member: &str) -> u64 {
    let bytes = namespace
        .as_bytes()
        .iter()
        .chain(&[0])
        .chain(name.as_bytes())
        .chain(&[0])
        .chain(member.as_bytes());
    mix(fnv1a_64(bytes))
}

/// A stable key for a replica's identity (16 hex digits): its member Lease is named after it,
/// whatever characters the identity holds.
pub fn member_key(identity: &str) -> String {
    format!("{:016x}", mix(fnv1a_64(identity.as_bytes())))
}

/// The member that owns the ScaledJob `namespace/name` among `members` (the highest rank; ties,
/// which need a 64-bit collision, go to the smaller name). `None` when there are no members.
pub fn owner<'a>(namespace: &str, name: &str, members: &'a BTreeSet<String>) -> Option<&'a str> {
    members
        .iter()
        .max_by(|a, b| {
            rank(namespace, name, a)
                .cmp(&rank(namespace, name, b))
                .then_with(|| b.cmp(a))
        })
        .map(String::as_str)
}

/// One member Lease as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLease {
    /// The Lease's name.
    pub name: String,
    /// `spec.holderIdentity` (`None` or empty: released).
    pub holder: Option<String>,
    /// `metadata.resourceVersion`: any change of the record changes it.
    pub version: String,
    /// `spec.leaseDurationSeconds`.
    pub duration: Duration,
}

/// The durations of the membership (the same as leader election's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a member Lease holds without a change.
    pub lease: Duration,
    /// A replica whose rounds failed for this long stops acting (must be < `lease`).
    pub renew_deadline: Duration,
}

/// What a replica may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Act on the ScaledJobs [`owner`] gives this replica among these live members (this
    /// replica included).
    Acting(BTreeSet<String>),
    /// A member, waiting until every other replica has seen it.
    Joining {
        /// When it may act, if its rounds keep succeeding.
        until: Instant,
    },
    /// Act on nothing.
    Idle,
}

/// One replica's view of the membership, fed one round at a time.
#[derive(Debug)]
pub struct Membership {
    me: String,
    timing: Timing,
    /// Lease name → (the record's version, when this replica first saw that version).
    observed: HashMap<String, (String, Instant)>,
    /// When the latest fully successful round started.
    last_ok: Option<Instant>,
    /// When the current run of successful rounds may act.
    acts_from: Option<Instant>,
    members: BTreeSet<String>,
}

impl Membership {
    /// The membership of the replica whose Leases hold `me`.
    pub fn new(me: &str, timing: Timing) -> Self {
        Self {
            me: me.to_owned(),
            timing,
            observed: HashMap::new(),
            last_ok: None,
            acts_from: None,
            members: BTreeSet::new(),
        }
    }

    /// Records a round that began at `started` and ended at `finished`: `listed` holds every
    /// member Lease when this replica's own Lease was renewed and the list succeeded, `None` when
    /// either failed.
    pub fn round(
        &mut self,
        started: Instant,
        finished: Instant,
        listed: Option<&[MemberLease]>,
    ) -> Standing {
        let Some(leases) = listed else {
            return self.standing(finished);
        };
        self.observed
            .retain(|name, _| leases.iter().any(|l| &l.name == name));
        let mut members = BTreeSet::from([self.me.clone()]);
        for lease in leases {
            let since = match self.observed.get(&lease.name) {
                Some((version, since)) if *version == lease.version => *since,
                _ => {
                    self.observed
                        .insert(lease.name.clone(), (lease.version.clone(), finished));
                    finished
                }
            };
            let Some(holder) = lease.holder.as_deref().filter(|h| !h.is_empty()) else {
                continue;
            };
            if finished.saturating_duration_since(since) < lease.duration {
                members.insert(holder.to_owned());
            }
        }
        let chain_broken = self
            .last_ok
            .is_none_or(|ok| started.saturating_duration_since(ok) >= self.timing.renew_deadline);
        if chain_broken || self.acts_from.is_none() {
            let alone = members.len() == 1;
            self.acts_from = Some(if alone {
                started
            } else {
                finished + self.timing.lease
            });
        }
        self.last_ok = Some(started);
        self.members = members;
        self.standing(finished)
    }

    /// What this replica may do at `now` (stops acting once the renew deadline has passed).
    pub fn standing(&mut self, now: Instant) -> Standing {
        let valid = self
            .last_ok
            .is_some_and(|ok| now.saturating_duration_since(ok) < self.timing.renew_deadline);
        if !valid {
            self.last_ok = None;
            self.acts_from = None;
            return Standing::Idle;
        }
        match self.acts_from {
            Some(from) if now >= from => Standing::Acting(self.members.clone()),
            Some(from) => Standing::Joining { until: from },
            None => Standing::Idle,
        }
    }

    /// When this replica must stop acting unless another round succeeds first.
    pub fn valid_until(&self) -> Option<Instant> {
        self.last_ok.map(|ok| ok + self.timing.renew_deadline)
    }

    /// Leases (name, version) that nobody has held for `after` by this replica's observation (a
    /// dead replica's, to delete; the version guards the delete against a late renewal).
    pub fn abandoned(&self, now: Instant, after: Duration) -> Vec<(String, String)> {
        let mut abandoned: Vec<_> = self
            .observed
            .iter()
            .filter(|(_, (_, since))| now.saturating_duration_since(*since) >= after)
            .map(|(name, (version, _))| (name.clone(), version.clone()))
            .collect();
        abandoned.sort();
        abandoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        lease: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
    };

    fn members(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    fn lease(holder: &str, version: &str) -> MemberLease {
        MemberLease {
            name: format!("lease-{holder}"),
            holder: Some(holder.into()),
            version: version.into(),
            duration: TIMING.lease,
        }
    }

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn every_scaled_job_has_one_owner_and_a_leaver_moves_only_its_own() {
        let three = members(&["a", "b", "c"]);
        let two = members(&["a", "b"]);
        let mut counts = HashMap::new();
        for i in 0..3000 {
            let name = format!("sj-{i}");
            let owner = owner("ns", &name, &three).unwrap();
            *counts.entry(owner).or_insert(0) += 1;
            let after = owner_of_two(&name, &two);
            if owner != "c" {
                assert_eq!(after, owner, "{name} stays where it was when c leaves");
            }
        }
        for member in ["a", "b", "c"] {
            let count = counts[member];
            assert!(
                (850..1150).contains(&count),
                "{member} owns {count} of 3000: {counts:?}"
            );
        }
        assert_eq!(owner("ns", "x", &BTreeSet::new()), None);
    }

    fn owner_of_two<'a>(name: &str, two: &'a BTreeSet<String>) -> &'a str {
        owner("ns", name, two).unwrap()
    }

    #[test]
    fn the_owner_depends_on_namespace_and_name_not_on_their_concatenation() {
        let many: BTreeSet<String> = (0..16).map(|i| format!("replica-{i}")).collect();
        let differs = (0..200).any(|i| {
            let a = owner(&format!("ns{i}"), "x", &many);
            let b = owner("ns", &format!("{i}x"), &many);
            a != b
        });
        assert!(differs);
    }

    /// Both Leases renewed at `second` (each renewal changes the record).
    fn renewed(holders: &[&str], second: u64) -> Vec<MemberLease> {
        holders
            .iter()
            .map(|h| lease(h, &second.to_string()))
            .collect()
    }

    #[test]
    fn a_lone_first_member_acts_at_once_and_a_second_waits_a_lease() {
        let t0 = Instant::now();
        let mut a = Membership::new("a", TIMING);
        assert_eq!(
            a.round(t0, t0, Some(&[lease("a", "1")])),
            Standing::Acting(members(&["a"]))
        );
        let mut b = Membership::new("b", TIMING);
        assert_eq!(
            b.round(at(t0, 2), at(t0, 3), Some(&renewed(&["a", "b"], 3))),
            Standing::Joining { until: at(t0, 18) }
        );
        // a sees b at its next round and gives up b's ScaledJobs at once.
        assert_eq!(
            a.round(at(t0, 4), at(t0, 4), Some(&renewed(&["a", "b"], 4))),
            Standing::Acting(members(&["a", "b"]))
        );
        for second in [5, 7, 9, 11, 13, 15, 17] {
            let state = b.round(
                at(t0, second),
                at(t0, second),
                Some(&renewed(&["a", "b"], second)),
            );
            assert_eq!(state, Standing::Joining { until: at(t0, 18) });
        }
        assert_eq!(
            b.round(at(t0, 19), at(t0, 19), Some(&renewed(&["a", "b"], 19))),
            Standing::Acting(members(&["a", "b"]))
        );
    }

    #[test]
    fn a_replica_whose_rounds_fail_stops_at_the_renew_deadline_and_joins_again() {
        let t0 = Instant::now();
        let mut a = Membership::new("a", TIMING);
        a.round(t0, t0, Some(&renewed(&["a", "b"], 0)));
        a.round(at(t0, 8), at(t0, 8), Some(&renewed(&["a", "b"], 8)));
        assert_eq!(
            a.round(at(t0, 16), at(t0, 16), Some(&renewed(&["a", "b"], 16))),
            Standing::Acting(members(&["a", "b"]))
        );
        assert_eq!(a.valid_until(), Some(at(t0, 26)));
        assert!(matches!(
            a.round(at(t0, 18), at(t0, 25), None),
            Standing::Acting(_)
        ));
        assert_eq!(a.standing(at(t0, 26)), Standing::Idle, "the renew deadline");
        // Back: b's Lease didn't change for 15 s of a's observation (16 → 31): b is gone, and
        // a, which lost its standing, acts at once only because no other member is live.
        assert_eq!(
            a.round(
                at(t0, 31),
                at(t0, 31),
                Some(&[lease("a", "31"), lease("b", "16")])
            ),
            Standing::Acting(members(&["a"])),
            "alone: no other live member"
        );
        let mut c = Membership::new("c", TIMING);
        c.round(t0, t0, Some(&[lease("c", "1")]));
        assert_eq!(
            c.round(at(t0, 11), at(t0, 12), Some(&renewed(&["a", "c"], 12))),
            Standing::Joining { until: at(t0, 27) },
            "c's rounds failed for the renew deadline: it joins again, with a live member"
        );
    }

    #[test]
    fn a_member_lease_expires_after_a_lease_of_no_change_seen_here() {
        let t0 = Instant::now();
        let mut a = Membership::new("a", TIMING);
        a.round(t0, t0, Some(&[lease("a", "1"), lease("b", "7")]));
        let mut last = Standing::Idle;
        for second in (2..=14).step_by(2) {
            last = a.round(
                at(t0, second),
                at(t0, second),
                Some(&[lease("a", &second.to_string()), lease("b", "7")]),
            );
        }
        assert_eq!(
            last,
            Standing::Joining { until: at(t0, 15) },
            "b was live at a's first round"
        );
        assert_eq!(
            a.round(
                at(t0, 15),
                at(t0, 15),
                Some(&[lease("a", "15"), lease("b", "7")])
            ),
            Standing::Acting(members(&["a"])),
            "b's record unchanged for 15 s"
        );
        assert_eq!(a.abandoned(at(t0, 15), Duration::from_secs(15)).len(), 1);
        // A renewal brings b back at once, and a released Lease (no holder) is no member.
        assert_eq!(
            a.round(
                at(t0, 16),
                at(t0, 16),
                Some(&[lease("a", "16"), lease("b", "8")])
            ),
            Standing::Acting(members(&["a", "b"]))
        );
        let released = MemberLease {
            holder: None,
            ..lease("b", "9")
        };
        assert_eq!(
            a.round(at(t0, 17), at(t0, 17), Some(&[lease("a", "17"), released])),
            Standing::Acting(members(&["a"]))
        );
    }

    #[test]
    fn a_newcomer_and_an_old_member_never_both_claim_a_scaled_job() {
        // Whatever a's stale view says, b acts only after a's view includes b or a stopped.
        let t0 = Instant::now();
        let mut a = Membership::new("a", TIMING);
        a.round(t0, t0, Some(&[lease("a", "1")]));
        let mut b = Membership::new("b", TIMING);
        let both = [lease("a", "1"), lease("b", "1")];
        b.round(at(t0, 1), at(t0, 1), Some(&both));
        // a's rounds fail from now on: it keeps its old view until its deadline (t0 + 10).
        for second in 1..=30 {
            let now = at(t0, second);
            let a_acts = a.standing(now);
            let b_acts = b.standing(now);
            assert!(
                !(matches!(a_acts, Standing::Acting(_)) && matches!(b_acts, Standing::Acting(_))),
                "both act at {second}s on different views"
            );
            if second % 2 == 0 {
                b.round(now, now, Some(&both));
            }
        }
    }
}
