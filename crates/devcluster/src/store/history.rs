//! The watch history: every change gets the next resourceVersion and goes to a bounded history
//! (older changes are compacted away: watching from before them is 410 Expired) and to the live
//! watches.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::{Inner, Key, Store};

/// How many changes the history keeps before compacting.
pub const HISTORY: usize = 20_000;

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

impl ChangeType {
    /// The watch event type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    /// Its resourceVersion.
    pub rv: u64,
    /// Added / modified / deleted.
    pub type_: ChangeType,
    /// (group, plural) of the object.
    pub resource: (String, String),
    /// Its namespace ("" for cluster-scoped).
    pub namespace: String,
    /// The object after the change (before, for a deletion, with the new resourceVersion).
    pub object: Arc<Value>,
}

/// Live changes after a watch's backlog.
pub type ChangeReceiver = broadcast::Receiver<Arc<Change>>;

impl Store {
    pub(super) fn record(
        &self,
        inner: &mut Inner,
        type_: ChangeType,
        (group, plural): (&str, &str),
        namespace: &str,
        object: Arc<Value>,
    ) {
        let change = Arc::new(Change {
            rv: inner.rv,
            type_,
            resource: (group.to_owned(), plural.to_owned()),
            namespace: namespace.to_owned(),
            object,
        });
        inner.history.push_back(Arc::clone(&change));
        while inner.history.len() > HISTORY {
            if let Some(dropped) = inner.history.pop_front() {
                inner.oldest = dropped.rv + 1;
            }
        }
        let _ = self.changes.send(change);
    }

    /// Drops the whole history: every watch from an older resourceVersion gets 410.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.oldest = inner.rv + 1;
    }

    /// Creates an object.
    pub(super) fn record_key(
        &self,
        inner: &mut Inner,
        type_: ChangeType,
        key: &Key,
        object: Arc<Value>,
    ) {
        self.record(inner, type_, (&key.0, &key.1), &key.2, object);
    }

    /// Changes after `from` matching `filter`, and a receiver for later ones, taken under one lock
    /// so nothing falls between them. `Err(oldest)` when `from` was compacted away.
    pub fn watch_from(
        &self,
        from: u64,
        filter: impl Fn(&Change) -> bool,
    ) -> Result<(Vec<Arc<Change>>, ChangeReceiver), u64> {
        let inner = self.lock();
        if from.saturating_add(1) < inner.oldest {
            return Err(inner.oldest);
        }
        let backlog = inner
            .history
            .iter()
            .filter(|c| c.rv > from && filter(c))
            .cloned()
            .collect();
        Ok((backlog, self.changes.subscribe()))
    }
}
