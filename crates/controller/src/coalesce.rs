//! Coalescing the polls that Job and pod changes ask for: at most one per ScaledJob per
//! [`WINDOW`] (lag mode; a window is given per item, at most [`WINDOW`]). The first change re-polls at once; changes within the window after it become one
//! poll at the window's end (none is lost: the last poll sees them all).
//!
//! A Job's life is a dozen watch events (created, its pod created, scheduled, running, done,
//! the Job's status, …); a ScaledJob with thirty Jobs in flight would otherwise be polled
//! hundreds of times a minute. kube-runtime's own `debounce` isn't used: it pushes a request out
//! again at every new event, so a ScaledJob whose Jobs change continuously would never be polled.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::scheduler::{ScheduleRequest, scheduler};
use tokio::time::Instant;

/// At most one Job- or pod-caused poll per ScaledJob in this window.
pub const WINDOW: Duration = Duration::from_secs(1);

/// `requests`, each item passed at once unless the same item passed less than `window(item)`
/// ago; then it passes once at the end of that window (repeats meanwhile merged into it).
pub fn coalesce<T>(
    requests: impl Stream<Item = T> + Send + 'static,
    window: impl Fn(&T) -> Duration + Send + 'static,
) -> impl Stream<Item = T> + Send + 'static
where
    T: Clone + Eq + Hash + Send + Sync + 'static,
{
    // When each item last passed (entries older than the window are swept now and then).
    let passed: Arc<Mutex<(HashMap<T, Instant>, Instant)>> =
        Arc::new(Mutex::new((HashMap::new(), Instant::now())));
    let schedule = {
        let passed = Arc::clone(&passed);
        requests.map(move |message| {
            let now = Instant::now();
            let guard = passed.lock();
            let last = guard.ok().and_then(|g| g.0.get(&message).copied());
            let run_at = last.map_or(now, |last| (last + window(&message)).max(now));
            ScheduleRequest { message, run_at }
        })
    };
    scheduler(schedule).map(move |message| {
        let now = Instant::now();
        if let Ok(mut guard) = passed.lock() {
            let (last, swept) = &mut *guard;
            if now.saturating_duration_since(*swept) > WINDOW * 10 {
                last.retain(|_, at| now.saturating_duration_since(*at) < WINDOW);
                *swept = now;
            }
            last.insert(message.clone(), now);
        }
        message
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_request_now_and_one_at_the_end_of_the_window() {
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        let mut out = Box::pin(coalesce(receiver, |_: &&str| WINDOW));
        let start = Instant::now();
        sender.unbounded_send("a").unwrap();
        assert_eq!(out.next().await, Some("a"));
        assert_eq!(start.elapsed(), Duration::ZERO, "the first at once");
        for _ in 0..50 {
            sender.unbounded_send("a").unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sender.unbounded_send("b").unwrap();
        assert_eq!(out.next().await, Some("b"), "others aren't held");
        assert_eq!(out.next().await, Some("a"));
        assert_eq!(
            start.elapsed(),
            WINDOW,
            "the burst's rest: one, at the window's end"
        );
        // Changes that go on keep coming through, once per window (never held off for good).
        for _ in 0..50 {
            sender.unbounded_send("a").unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(out.next().await, Some("a"));
        assert_eq!(start.elapsed(), WINDOW * 2);
        drop(sender);
        assert_eq!(out.next().await, None);
    }
}
