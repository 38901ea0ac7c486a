use proptest::prelude::*;

use super::*;

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, the DNS-1123 label, written out.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| inner(b) && *b != b'-');
    edge(bytes.first()) && edge(bytes.last()) && bytes.iter().all(inner)
}

#[test]
fn fnv_1a_64_matches_the_published_test_vectors() {
    for (input, expected) in [
        ("", 0xcbf2_9ce4_8422_2325),
        ("a", 0xaf63_dc4c_8601_ec8c),
        ("foobar", 0x8594_4171_f739_67e8),
    ] {
        assert_eq!(fnv1a_64(input.as_bytes()), expected, "{input:?}");
    }
}

#[test]
fn names_are_pinned_because_a_changed_name_would_dispatch_a_message_again() {
    struct Case {
        scaled_job: &'static str,
        topic: &'static str,
        partition: i32,
        offset: i64,
        attempt: u32,
        expected: &'static str,
    }
    for case in [
        Case {
            scaled_job: "orders-worker",
            topic: "orders",
            partition: 3,
            offset: 1042,
            attempt: 1,
            expected: "orders-worker-904cd7bb-3-1042-1",
        },
        Case {
            scaled_job: "orders.worker.eu",
            topic: "orders",
            partition: 0,
            offset: 0,
            attempt: 2,
            expected: "orders-worker-eu-02cedcff-0-0-2",
        },
        Case {
            // The largest coordinates leave 12 characters, `orders-east-`, and the `-` goes.
            scaled_job: "orders-east-worker-for-big-batches",
            topic: "t",
            partition: 2_147_483_647,
            offset: 9_223_372_036_854_775_807,
            attempt: 4_294_967_295,
            expected: "orders-east-6c57c2ff-2147483647-9223372036854775807-4294967295",
        },
    ] {
        let name = job_name(
            case.scaled_job,
            case.topic,
            case.partition,
            case.offset,
            case.attempt,
        );
        assert_eq!(name, case.expected);
        assert!(name.len() <= MAX_NAME_LEN && is_dns_label(&name), "{name}");
    }
}

#[test]
fn the_hash_covers_scaled_job_and_topic_apart() {
    assert_ne!(DispatchHash::of("ab", "c"), DispatchHash::of("a", "bc"));
    assert_ne!(
        DispatchHash::of("w", "orders"),
        DispatchHash::of("w", "payments")
    );
    assert_eq!(
        DispatchHash::of("orders-worker", "orders").to_string(),
        "904cd7bb"
    );
}

#[test]
fn a_name_with_nothing_usable_starts_with_the_hash() {
    let name = job_name("...", "t", 1, 2, 3);
    assert!(is_dns_label(&name), "{name}");
    assert!(name.starts_with(&DispatchHash::of("...", "t").to_string()));
}

#[test]
fn the_hash_parses_only_as_it_is_written() {
    let hash = DispatchHash::of("w", "t");
    assert_eq!(hash.to_string().parse(), Ok(hash));
    for bad in [
        "",
        "904cd7b",
        "904cd7bb0",
        "904CD7BB",
        "+04cd7bb",
        "904cd7bg",
    ] {
        assert_eq!(
            bad.parse::<DispatchHash>(),
            Err(InvalidDispatchHash),
            "{bad:?}"
        );
    }
}

#[test]
fn coordinates_round_trip_through_labels_and_missing_or_bad_labels_give_none() {
    let coordinates = JobCoordinates {
        partition: 7,
        offset: 123_456,
        attempt: 2,
        hash: DispatchHash::of("w", "t"),
    };
    let labels = coordinates.labels();
    assert_eq!(
        labels.get(DISPATCH_LABEL),
        Some(&coordinates.hash.to_string())
    );
    assert_eq!(JobCoordinates::from_labels(&labels), Some(coordinates));
    for key in [PARTITION_LABEL, OFFSET_LABEL, ATTEMPT_LABEL, DISPATCH_LABEL] {
        let mut missing = labels.clone();
        missing.remove(key);
        assert_eq!(JobCoordinates::from_labels(&missing), None, "without {key}");
        let mut bad = labels.clone();
        bad.insert(key.to_owned(), "x".to_owned());
        assert_eq!(JobCoordinates::from_labels(&bad), None, "bad {key}");
    }
    let mut negative_attempt = labels;
    negative_attempt.insert(ATTEMPT_LABEL.to_owned(), "-1".to_owned());
    assert_eq!(JobCoordinates::from_labels(&negative_attempt), None);
}

proptest! {
    #[test]
    fn names_are_short_valid_labels(
        scaled_job in "[a-z0-9][-a-z0-9.]{0,252}",
        topic in "[a-zA-Z0-9._-]{1,249}",
        partition in any::<i32>(),
        offset in any::<i64>(),
        attempt in any::<u32>(),
    ) {
        let name = job_name(&scaled_job, &topic, partition, offset, attempt);
        prop_assert!(name.len() <= MAX_NAME_LEN, "{} is {} long", name, name.len());
        prop_assert!(is_dns_label(&name), "{}", name);
    }

    #[test]
    fn any_text_still_gives_a_valid_label(scaled_job in any::<String>(), topic in any::<String>()) {
        let name = job_name(&scaled_job, &topic, -1, i64::MIN, 0);
        prop_assert!(name.len() <= MAX_NAME_LEN && is_dns_label(&name), "{}", name);
    }

    #[test]
    fn names_differ_whenever_partition_offset_or_attempt_differ(
        scaled_job in "[a-z0-9][-a-z0-9.]{0,252}",
        a in (any::<i32>(), any::<i64>(), any::<u32>()),
        b in (any::<i32>(), any::<i64>(), any::<u32>()),
        near in any::<bool>(),
    ) {
        // Half the cases are neighbours (the likely clash: 1-23 against 12-3).
        let b = if near { (a.0.wrapping_add(1), a.1 / 10, a.2) } else { b };
        let name = |(p, o, t): (i32, i64, u32)| job_name(&scaled_job, "orders", p, o, t);
        prop_assert_eq!(name(a) == name(b), a == b);
    }

    #[test]
    fn coordinates_round_trip(partition in any::<i32>(), offset in any::<i64>(), attempt in any::<u32>(), key in any::<u32>()) {
        let coordinates = JobCoordinates { partition, offset, attempt, hash: DispatchHash(key) };
        prop_assert_eq!(JobCoordinates::from_labels(&coordinates.labels()), Some(coordinates));
    }
}
