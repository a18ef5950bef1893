//! Email through a real SMTP server (Python's aiosmtpd on 127.0.0.1, started by the test):
//! multipart text and HTML, the Message-ID from the message id, RFC 8058 List-Unsubscribe
//! headers; and a recipient the relay refuses with 550 5.1.1 becomes a dead letter and a
//! hard bounce that suppresses the address.
//!
//! `.ci/run` installs aiosmtpd into the repo's venv and sets KAIROS_TEST_PYTHON.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use kairos_core::campaign::{CampaignDef, TriggerDef};
use kairos_server::config::SmtpConfig;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = r#"
import asyncio, os, sys
from aiosmtpd.controller import Controller

out = sys.argv[1]

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 User unknown"
        if address.startswith("busy@"):
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = len(os.listdir(out))
        with open(os.path.join(out, f"{n:04}.eml"), "wb") as f:
            f.write(envelope.content)
        return "250 Message accepted"

c = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[2]))
c.start()
print("ready", flush=True)
sys.stdin.read()
"#;

struct Smtpd(Child);

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_through_a_real_smtp_server_and_a_refused_address_is_suppressed() {
    let Some(python) = std::env::var_os("KAIROS_TEST_PYTHON") else {
        if std::env::var_os("CI").is_some() {
            panic!("KAIROS_TEST_PYTHON is not set: .ci/run must create the venv with aiosmtpd");
        }
        println!("SKIPPED: set KAIROS_TEST_PYTHON to a python with aiosmtpd (see .ci/run)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    let script = dir.path().join("smtpd.py");
    std::fs::write(&script, SERVER).unwrap();
    let port = free_port();
    let _smtpd = Smtpd(
        Command::new(python)
            .arg(&script)
            .arg(&mail)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let s = TestServer::start_with(|c| {
        c.default_definitions = false;
        c.delivery.poll_ms = 20;
        c.delivery.public_url = "https://kairos.shop.example".into();
        c.delivery.smtp = Some(SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            security: "plain".into(),
            username: None,
            password: None,
            from: "Shop <news@shop.example>".into(),
            timeout_ms: 5_000,
        });
        c.campaigns.insert(
            "hello".into(),
            CampaignDef {
                trigger: TriggerDef {
                    event: Some(r#"event.name == "Signed Up""#.into()),
                    ..TriggerDef::default()
                },
                template: Some("hello".into()),
                ..CampaignDef::default()
            },
        );
    })
    .await;
    let (status, body) = s
        .admin_put(
            "/v1/templates/hello",
            json!({"subject": "Hello {{ profile.first_name | default: \"there\" }}",
                   "html": "<h1>Hello {{ profile.first_name }}</h1>",
                   "text": "Hello {{ profile.first_name }}"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let t0 = s.now.load(std::sync::atomic::Ordering::SeqCst);
    let ts = kairos_core::time::format_timestamp(t0);
    let mut batch = Vec::new();
    for (user, email) in [("ada", "ada@example.com"), ("nob", "nobody@example.com")] {
        batch.push(json!({"type": "identify", "userId": user, "messageId": format!("i-{user}"), "timestamp": ts,
            "traits": {"email": email, "first_name": "Ada", "timezone": "UTC", "subscriptions": {"marketing": true}}}));
        batch.push(json!({"type": "track", "userId": user, "messageId": format!("s-{user}"), "timestamp": ts, "event": "Signed Up"}));
    }
    let (status, body) = s.post("/v1/batch", json!({"batch": batch})).await;
    assert_eq!(status, 200, "{body}");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, dead) = s.admin_get("/v1/outbox/dead").await;
        let delivered = std::fs::read_dir(&mail).unwrap().count();
        if delivered == 1 && dead["messages"].as_array().is_some_and(|d| d.len() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "mail: {delivered}, dead: {dead}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let eml = std::fs::read_to_string(mail.join("0000.eml")).unwrap();
    assert!(eml.contains("Subject: Hello Ada"), "{eml}");
    assert!(eml.contains("To: ada@example.com"), "{eml}");
    assert!(eml.contains("multipart/alternative"), "{eml}");
    assert!(
        eml.contains("text/plain") && eml.contains("text/html"),
        "{eml}"
    );
    assert!(eml.contains("<h1>Hello Ada</h1>"), "{eml}");
    assert!(
        eml.contains("List-Unsubscribe: <https://kairos.shop.example/v1/unsubscribe?token="),
        "{eml}"
    );
    assert!(
        eml.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{eml}"
    );
    let (_, report) = s.admin_get("/v1/campaigns/hello/changes").await;
    let mid = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == "queued")
        .unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        eml.contains(&format!("Message-ID: <{mid}@shop.example>"))
            || eml.contains(&format!("Message-Id: <{mid}@shop.example>")),
        "{eml}"
    );

    // The refused address: a dead letter with the relay's answer, and a hard bounce.
    let (_, dead) = s.admin_get("/v1/outbox/dead").await;
    let d = &dead["messages"][0];
    assert_eq!(d["to"], "nobody@example.com");
    assert!(d["lastError"].as_str().unwrap().contains("550"), "{d}");
    let nob = s
        .wait_for("/v1/profiles/nob", 10, |p| {
            p["state"]["suppressed"].is_string()
        })
        .await;
    assert_eq!(nob["state"]["suppressed"], "hard_bounce", "{nob}");
    s.stop().await;
}
