//! Generated requests against the embedded API server (issue 18): any method, path, query,
//! content type and body — JSON of any shape, patches, garbage bytes — gets an answer (never a
//! dropped connection, which is what a panic in a handler looks like), every error is a
//! `metav1.Status`, and the server keeps serving. A bounded run (512 cases).

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

use std::sync::OnceLock;

use jobtide_devcluster::DevCluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client, Config};
use proptest::prelude::*;
use serde_json::Value;

struct Shared {
    runtime: tokio::runtime::Runtime,
    client: Client,
    _cluster: DevCluster,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (cluster, client) = runtime.block_on(async {
            let cluster = DevCluster::start("127.0.0.1:0".parse().unwrap(), None)
                .await
                .unwrap();
            let client = Client::try_from(Config::new(cluster.url().parse().unwrap())).unwrap();
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            for crd in jobtide_api::crd::all() {
                crds.create(&PostParams::default(), &crd).await.unwrap();
            }
            (cluster, client)
        });
        Shared {
            runtime,
            client,
            _cluster: cluster,
        }
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-zA-Z0-9./:=!-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let keys = prop_oneof![
            Just("metadata".to_owned()),
            Just("name".to_owned()),
            Just("namespace".to_owned()),
            Just("labels".to_owned()),
            Just("annotations".to_owned()),
            Just("spec".to_owned()),
            Just("status".to_owned()),
            Just("kind".to_owned()),
            Just("apiVersion".to_owned()),
            Just("op".to_owned()),
            Just("path".to_owned()),
            Just("value".to_owned()),
            Just("finalizers".to_owned()),
            Just("ownerReferences".to_owned()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
        Just(Vec::new()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just("/api/v1".to_owned()),
        Just("/apis/batch/v1".to_owned()),
        Just("/apis/keda.sh/v1alpha1".to_owned()),
        Just("/apis/coordination.k8s.io/v1".to_owned()),
        Just("/apis".to_owned()),
        Just("/version".to_owned()),
        "/[a-z%0-9]{0,8}",
    ];
    let namespace = prop_oneof![
        Just(String::new()),
        Just("/namespaces/default".to_owned()),
        "/namespaces/[a-zA-Z0-9%.-]{0,8}",
    ];
    let plural = prop_oneof![
        Just("/configmaps".to_owned()),
        Just("/secrets".to_owned()),
        Just("/jobs".to_owned()),
        Just("/pods".to_owned()),
        Just("/scaledjobs".to_owned()),
        Just("/leases".to_owned()),
        Just("/namespaces".to_owned()),
        Just(String::new()),
    ];
    let name = prop_oneof![
        Just(String::new()),
        Just("/x".to_owned()),
        "/[a-zA-Z0-9%.+-]{0,10}",
    ];
    let sub = prop_oneof![
        Just(String::new()),
        Just("/status".to_owned()),
        Just("/log".to_owned()),
        "/[a-z]{1,5}",
    ];
    (prefix, namespace, plural, name, sub).prop_map(|(a, b, c, d, e)| format!("{a}{b}{c}{d}{e}"))
}

fn query() -> impl Strategy<Value = String> {
    let pair = prop_oneof![
        "(watch|limit|resourceVersion|resourceVersionMatch|timeoutSeconds|labelSelector|fieldSelector|continue|propagationPolicy|allowWatchBookmarks|sendInitialEvents)=[a-zA-Z0-9%=!,()-]{0,10}",
        "[a-z]{1,5}=[a-z0-9]{0,5}",
    ];
    prop::collection::vec(pair, 0..3).prop_map(|pairs| {
        if pairs.is_empty() {
            String::new()
        } else {
            format!("?{}", pairs.join("&"))
        }
    })
}

async fn send(
    client: &Client,
    method: &str,
    uri: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Option<(u16, Vec<u8>)> {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body))
        .ok()?;
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), client.send(request))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    // A watch streams: read what is there within a moment, then stop.
    let bytes = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|c| c.to_bytes().to_vec())
    .unwrap_or_default();
    Some((status, bytes))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_request_gets_an_answer_and_every_error_is_a_status(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("PATCH"), Just("DELETE")],
        path in path(),
        query in query(),
        content_type in prop_oneof![
            Just("application/json"),
            Just("application/merge-patch+json"),
            Just("application/json-patch+json"),
            Just("application/strategic-merge-patch+json"),
            Just("text/plain"),
        ],
        body in body(),
    ) {
        let shared = shared();
        let uri = format!("{path}{query}");
        let answer = shared.runtime.block_on(send(&shared.client, method, &uri, content_type, body));
        // A request with an invalid URI is refused by the client itself; anything sent is answered.
        if let Some((status, bytes)) = answer {
            prop_assert!((200..600).contains(&status), "{method} {uri}: {status}");
            if status >= 400 {
                let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                prop_assert_eq!(parsed["kind"].as_str(), Some("Status"), "{} {}: {}", method, uri, String::from_utf8_lossy(&bytes));
            }
        } else {
            let sent = http::Request::builder().uri(&uri).body(()).is_ok();
            prop_assert!(!sent, "{method} {uri}: the connection failed (a panic?)");
        }
        // And it keeps serving.
        let alive = shared.runtime.block_on(send(&shared.client, "GET", "/version", "application/json", Vec::new()));
        prop_assert_eq!(alive.map(|(s, _)| s), Some(200));
    }
}
