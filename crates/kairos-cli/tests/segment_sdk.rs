#![allow(clippy::unwrap_used)]
//! The official Segment Python SDK (segment-analytics-python) sends identify, track, page and
//! alias through a real Kairos server, with gzip off and on; the merged profile is then read
//! through the API. `.ci/run` creates the venv and sets KAIROS_TEST_PYTHON.

mod support;

use support::*;

const SCRIPT: &str = r#"
import sys
from segment.analytics import Client

host, write_key, gzip, run = sys.argv[1], sys.argv[2], sys.argv[3] == "gzip", sys.argv[4]
errors = []
client = Client(write_key, host=host, gzip=gzip, on_error=lambda e, batch: errors.append(repr(e)),
                max_retries=3, upload_interval=0.05)
client.identify("sdk-user", {"email": "  SDK.User@Example.com ", "name": "Ada", "plan": "pro"},
                anonymous_id="sdk-anon")
client.track("sdk-user", "Order Completed",
             {"order_id": "o-" + run, "revenue": 49.5, "currency": "USD",
              "products": [{"product_id": "sku-1", "price": 24.75, "quantity": 2}]})
client.page("sdk-user", category="Docs", name="Getting Started",
            properties={"url": "https://example.com/docs", "path": "/docs"})
client.track(event="Product Viewed", anonymous_id="sdk-anon-" + run,
             properties={"product_id": "sku-2"})
client.flush()
client.alias("sdk-anon-" + run, "sdk-user")
client.flush()
client.join()
if errors:
    print("SDK errors:", errors)
    sys.exit(1)
print("sent")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_segment_python_sdk_builds_one_merged_profile() {
    let Some(python) = std::env::var_os("KAIROS_TEST_PYTHON") else {
        if std::env::var_os("CI").is_some() {
            panic!("KAIROS_TEST_PYTHON is not set: .ci/run must create the SDK venv");
        }
        println!("SKIPPED: set KAIROS_TEST_PYTHON to a python with segment-analytics-python (see .ci/run)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data")).await;
    let script = dir.path().join("send.py");
    std::fs::write(&script, SCRIPT).unwrap();
    for (mode, run) in [("plain", "1"), ("gzip", "2")] {
        let python = python.clone();
        let (script, base) = (script.clone(), server.base.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(python)
                .arg(&script)
                .args([base.as_str(), WRITE_KEY, mode, run])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "SDK run {mode} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.log_tail()
        );
    }
    let p = server.admin_get("/v1/profiles?userId=sdk-user").await;
    let ids = &p["identifiers"];
    let anon: Vec<&str> = ids["anonymousId"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for a in ["sdk-anon", "sdk-anon-1", "sdk-anon-2"] {
        assert!(anon.contains(&a), "{a} not merged: {p}");
    }
    assert_eq!(ids["email"][0], "sdk.user@example.com");
    assert_eq!(ids["userId"], serde_json::json!(["sdk-user"]));
    let state = &p["state"];
    assert_eq!(state["orders"], 2, "one order per run: {p}");
    assert_eq!(state["lifetimeRevenue"], 99.0);
    assert_eq!(state["traits"]["plan"], "pro");
    assert_eq!(
        state["events"]["Product Viewed"]["total"], 2,
        "anonymous views joined by alias"
    );
    assert_eq!(state["events"]["Page Viewed"]["total"], 2);
    // Each SDK message is stored once.
    let logged = server.logged_message_ids().await;
    let unique: std::collections::HashSet<_> = logged.iter().collect();
    assert_eq!(unique.len(), logged.len());
    assert_eq!(logged.len(), 10, "5 calls per run");
}
