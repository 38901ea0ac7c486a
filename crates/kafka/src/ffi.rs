//! The one module with `unsafe`: librdkafka calls that rdkafka's safe API doesn't offer.
//!
//! - [`list_group_offsets`] / [`list_groups_offsets`]: the admin `ListConsumerGroupOffsets` call (an OffsetFetch to the
//!   group's coordinator) for **any** group from one shared client, with or without a partition
//!   list. rdkafka only exposes committed offsets of a consumer's own `group.id`, which would
//!   need one client per group, and cannot ask for "every topic the group committed".
//! - [`MockKafka`]: librdkafka's in-process mock cluster with the initial rebalance delay set to
//!   0 (rdkafka's `MockCluster` doesn't expose that setting).
//!
//! # Review notes
//! Every pointer handed to librdkafka comes from a live owner on the Rust side for the duration
//! of the call; every object librdkafka returns is destroyed exactly once (`*_destroy` on every
//! path, results read before the event is destroyed and copied into owned Rust values). Strings
//! from librdkafka are read with `CStr` only while their owner (the event) is alive. The calls
//! block only on our own queue, with a timeout.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka_sys as rd;

/// A committed offset returned by `ListConsumerGroupOffsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset; −1 (`RD_KAFKA_OFFSET_INVALID`) when the group has none.
    pub offset: i64,
    /// A per-partition error, if the broker returned one.
    pub error: Option<String>,
}

fn c_string(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their owner, which
    // the callers keep alive across this call.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

fn err_string(code: rd::rd_kafka_resp_err_t) -> String {
    // SAFETY: rd_kafka_err2str returns a static string for any code.
    c_string(unsafe { rd::rd_kafka_err2str(code) })
}

/// Owns a librdkafka object and destroys it on drop.
struct Owned<T> {
    ptr: *mut T,
    destroy: unsafe extern "C" fn(*mut T),
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: `ptr` came from the matching constructor and is destroyed only here.
            unsafe { (self.destroy)(self.ptr) };
        }
    }
}

/// Fetches `group`'s committed offsets, for `partitions` or (with `None`) for every partition
/// the group has committed. Blocks for at most `timeout`.
pub fn list_group_offsets<C: ClientContext>(
    client: &Client<C>,
    group: &str,
    partitions: Option<&TopicPartitionList>,
    timeout: Duration,
) -> Result<Vec<GroupOffset>, String> {
    list_groups_offsets(client, &[(group, partitions)], timeout)
        .pop()
        .unwrap_or_else(|| Err("no answer".into()))
}

/// Fetches the committed offsets of several groups at once (each as [`list_group_offsets`]):
/// one admin call per group (librdkafka's `ListConsumerGroupOffsets` takes one group per call),
/// all in flight together and answered on one queue, so a batch of groups blocks one thread for
/// at most `timeout` (one blocked thread per group made a poll round of 1,000 groups start
/// about 100 threads). The answers are in the order of `groups`.
pub fn list_groups_offsets<C: ClientContext>(
    client: &Client<C>,
    groups: &[(&str, Option<&TopicPartitionList>)],
    timeout: Duration,
) -> Vec<Result<Vec<GroupOffset>, String>> {
    let timeout_ms = c_int::try_from(timeout.as_millis())
        .unwrap_or(c_int::MAX)
        .max(1);
    let unanswered = format!("no answer within {} ms", timeout.as_millis());
    let mut out: Vec<Result<Vec<GroupOffset>, String>> = vec![Err(unanswered); groups.len()];
    let rk = client.native_ptr();
    // SAFETY (whole block): see the module's review notes; every object is owned by an `Owned`
    // guard kept until the answers are read, and `rk` outlives the call because `client` is
    // borrowed. An opaque is the request's index, never dereferenced.
    unsafe {
        let queue = Owned {
            ptr: rd::rd_kafka_queue_new(rk),
            destroy: rd::rd_kafka_queue_destroy,
        };
        let mut held = Vec::with_capacity(groups.len());
        let mut pending = 0usize;
        for (index, (group, partitions)) in groups.iter().enumerate() {
            let Ok(group_c) = CString::new(*group) else {
                out[index] = Err("group id contains a NUL byte".to_owned());
                continue;
            };
            let options = Owned {
                ptr: rd::rd_kafka_AdminOptions_new(
                    rk,
                    rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
                ),
                destroy: rd::rd_kafka_AdminOptions_destroy,
            };
            let mut errstr = [0 as c_char; 256];
            rd::rd_kafka_AdminOptions_set_request_timeout(
                options.ptr,
                timeout_ms,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            rd::rd_kafka_AdminOptions_set_opaque(
                options.ptr,
                std::ptr::without_provenance_mut(index),
            );
            let tpl = partitions.map_or(std::ptr::null(), |p| p.ptr().cast_const());
            let request = Owned {
                ptr: rd::rd_kafka_ListConsumerGroupOffsets_new(group_c.as_ptr(), tpl),
                destroy: rd::rd_kafka_ListConsumerGroupOffsets_destroy,
            };
            let mut requests = [request.ptr];
            rd::rd_kafka_ListConsumerGroupOffsets(
                rk,
                requests.as_mut_ptr(),
                1,
                options.ptr,
                queue.ptr,
            );
            held.push((group_c, options, request));
            pending += 1;
        }
        let deadline = Instant::now() + timeout + Duration::from_secs(1);
        while pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = c_int::try_from(left.as_millis())
                .unwrap_or(c_int::MAX)
                .max(1);
            let event = Owned {
                ptr: rd::rd_kafka_queue_poll(queue.ptr, wait),
                destroy: rd::rd_kafka_event_destroy,
            };
            if event.ptr.is_null() {
                break;
            }
            let index = rd::rd_kafka_event_opaque(event.ptr).addr();
            if let Some(slot) = out.get_mut(index) {
                *slot = group_answer(event.ptr);
                pending -= 1;
            }
        }
        out
    }
}

/// The committed offsets in one `ListConsumerGroupOffsets` answer.
///
/// # Safety
/// `event` is a live event from the admin call's queue, destroyed only after this returns.
unsafe fn group_answer(event: *mut rd::rd_kafka_event_t) -> Result<Vec<GroupOffset>, String> {
    // SAFETY: see the function's contract; everything read here is owned by the event.
    unsafe {
        let code = rd::rd_kafka_event_error(event);
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            let detail = c_string(rd::rd_kafka_event_error_string(event));
            return Err(if detail.is_empty() {
                err_string(code)
            } else {
                detail
            });
        }
        let result = rd::rd_kafka_event_ListConsumerGroupOffsets_result(event);
        if result.is_null() {
            return Err("unexpected admin result type".into());
        }
        let mut count = 0usize;
        let groups = rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &raw mut count);
        let mut out = Vec::new();
        for i in 0..count {
            let group_result = *groups.add(i);
            let error = rd::rd_kafka_group_result_error(group_result);
            if !error.is_null() {
                return Err(c_string(rd::rd_kafka_error_string(error)));
            }
            let list = rd::rd_kafka_group_result_partitions(group_result);
            if list.is_null() {
                continue;
            }
            let list = &*list;
            let elems = usize::try_from(list.cnt).unwrap_or(0);
            for j in 0..elems {
                let elem = &*list.elems.add(j);
                out.push(GroupOffset {
                    topic: c_string(elem.topic),
                    partition: elem.partition,
                    offset: elem.offset,
                    error: (elem.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
                        .then(|| err_string(elem.err)),
                });
            }
        }
        Ok(out)
    }
}

/// librdkafka's in-process mock Kafka cluster, for tests and `jobtide dev`.
///
/// What it lacks (measured, see the design notes): Admin CreateTopics (create topics with
/// [`MockKafka::create_topic`]), DescribeGroups / ListGroups; DeleteGroups aborts the process.
pub struct MockKafka {
    cluster: *mut rd::rd_kafka_mock_cluster_t,
    // The client that owns the cluster; dropped after the cluster is destroyed.
    _handle: BaseProducer,
}

// SAFETY: the mock cluster is internally synchronised by librdkafka (its own thread); the
// pointer is only used through librdkafka's thread-safe mock API.
unsafe impl Send for MockKafka {}
// SAFETY: as above.
unsafe impl Sync for MockKafka {}

impl std::fmt::Debug for MockKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockKafka")
            .field("bootstrap_servers", &self.bootstrap_servers())
            .finish()
    }
}

impl MockKafka {
    /// Starts a mock cluster of `brokers` brokers on 127.0.0.1 with no initial rebalance delay.
    pub fn start(brokers: i32) -> Result<Self, String> {
        let handle: BaseProducer = ClientConfig::new()
            .set("log_level", "3")
            .create()
            .map_err(|e| format!("creating the mock cluster's handle: {e}"))?;
        // SAFETY: the handle is alive; the returned cluster is destroyed in Drop before it.
        let cluster =
            unsafe { rd::rd_kafka_mock_cluster_new(handle.client().native_ptr(), brokers) };
        if cluster.is_null() {
            return Err("librdkafka could not start a mock cluster".into());
        }
        // SAFETY: `cluster` is live.
        unsafe { rd::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0) };
        Ok(Self {
            cluster,
            _handle: handle,
        })
    }

    /// `host:port,…` of the mock brokers.
    pub fn bootstrap_servers(&self) -> String {
        // SAFETY: the string lives as long as the cluster, which `self` keeps alive.
        c_string(unsafe { rd::rd_kafka_mock_cluster_bootstraps(self.cluster) })
    }

    /// Creates a topic (the mock has no CreateTopics API).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), String> {
        let name = CString::new(topic).map_err(|_| "topic contains a NUL byte".to_owned())?;
        // SAFETY: `cluster` and `name` are live for the call.
        let code =
            unsafe { rd::rd_kafka_mock_topic_create(self.cluster, name.as_ptr(), partitions, 1) };
        if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            Err(err_string(code))
        }
    }
}

impl MockKafka {
    /// Makes broker `broker_id` (the mock numbers them from 1) advertise `host:port` in
    /// Metadata instead of its own listener: a stable address that forwards to it.
    pub fn advertise(&self, broker_id: i32, host: &str, port: u16) -> Result<(), String> {
        let host = CString::new(host).map_err(|_| "host contains a NUL byte".to_owned())?;
        // SAFETY: `cluster` and `host` are live for the call; librdkafka copies the host.
        unsafe {
            rd::rd_kafka_mock_broker_set_host_port(
                self.cluster,
                broker_id,
                host.as_ptr(),
                i32::from(port),
            );
        };
        Ok(())
    }
}

impl MockKafka {
    /// Takes broker `broker_id` down (its connections close and new ones are refused) or brings
    /// it back up: a broker outage for tests.
    pub fn set_broker_up(&self, broker_id: i32, up: bool) {
        // SAFETY: `cluster` is live for the call; the mock cluster synchronises internally.
        unsafe {
            if up {
                rd::rd_kafka_mock_broker_set_up(self.cluster, broker_id);
            } else {
                rd::rd_kafka_mock_broker_set_down(self.cluster, broker_id);
            }
        };
    }
}

/// Kafka protocol API keys the mock cluster can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockApi {
    /// ListOffsets (API key 2).
    ListOffsets,
    /// Metadata (API key 3).
    Metadata,
    /// OffsetCommit (API key 8).
    OffsetCommit,
    /// OffsetFetch (API key 9).
    OffsetFetch,
}

/// Errors the mock cluster can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockError {
    /// TOPIC_AUTHORIZATION_FAILED (29).
    TopicAuthorizationFailed,
    /// GROUP_AUTHORIZATION_FAILED (30).
    GroupAuthorizationFailed,
    /// REBALANCE_IN_PROGRESS (27).
    RebalanceInProgress,
}

impl MockKafka {
    /// Makes the next `count` requests of `api` fail with `error` (fault injection for tests).
    pub fn fail_next(&self, api: MockApi, error: MockError, count: usize) {
        let key: i16 = match api {
            MockApi::ListOffsets => 2,
            MockApi::Metadata => 3,
            MockApi::OffsetCommit => 8,
            MockApi::OffsetFetch => 9,
        };
        let code = match error {
            MockError::TopicAuthorizationFailed => {
                rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED
            }
            MockError::GroupAuthorizationFailed => {
                rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED
            }
            MockError::RebalanceInProgress => {
                rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS
            }
        };
        let errors = vec![code; count];
        // SAFETY: `cluster` is live; librdkafka copies `count` codes from `errors` during the call.
        unsafe {
            rd::rd_kafka_mock_push_request_errors_array(self.cluster, key, count, errors.as_ptr());
        };
    }
}

impl Drop for MockKafka {
    fn drop(&mut self) {
        // SAFETY: created in `start`, destroyed only here, while the handle is still alive.
        unsafe { rd::rd_kafka_mock_cluster_destroy(self.cluster) };
    }
}
