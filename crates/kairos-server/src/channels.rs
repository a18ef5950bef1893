//! The channels messages leave through: signed webhooks and an SMTP relay, each attempt
//! classified as delivered, worth retrying, or permanently failed (see
//! [`crate::delivery::Attempt`]).
//!
//! Webhook requests carry `Idempotency-Key` (the same on every attempt of a message) and
//! `Kairos-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the
//! timestamp is signed with the body, so a captured request cannot be replayed later.

use crate::config::{DeliveryConfig, WebhookEndpointConfig};
use crate::delivery::{constant_time_eq, hmac_sha256, Attempt};
use crate::messages::RenderedMessage;
use kairos_core::time::format_timestamp;
use kairos_core::Millis;
use kairos_store::OutboxRow;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Hex HMAC-SHA256 of `"<t>.<body>"`.
fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    hmac_sha256(secret, &signed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `t=<t>,v1=<hex>` for `body` at `t` (unix seconds).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", signature(secret, t, body))
}

/// Why a signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// Checks a `Kairos-Signature` header: its timestamp within `tolerance` seconds of `now`
/// and one of its `v1` signatures (several while secrets rotate) matching. For receivers.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), VerifyError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(v.to_string()),
            _ => {}
        }
    }
    let t = t.ok_or(VerifyError::Malformed)?;
    if sigs.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if (now - t).abs() > tolerance {
        return Err(VerifyError::Stale);
    }
    let want = signature(secret, t, body);
    if sigs
        .iter()
        .any(|s| constant_time_eq(s.as_bytes(), want.as_bytes()))
    {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

pub struct Channels {
    client: reqwest::Client,
    webhooks: BTreeMap<String, WebhookEndpointConfig>,
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
}

impl Channels {
    pub fn new(cfg: &DeliveryConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("kairos/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let smtp = match &cfg.smtp {
            None => None,
            Some(s) => {
                let from: Mailbox = s
                    .from
                    .parse()
                    .map_err(|e| format!("smtp.from `{}`: {e}", s.from))?;
                let tls =
                    || TlsParameters::new(s.host.clone()).map_err(|e| format!("smtp tls: {e}"));
                let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
                    .port(s.port)
                    .timeout(Some(Duration::from_millis(s.timeout_ms)));
                b = match s.security.as_str() {
                    "tls" => b.tls(Tls::Wrapper(tls()?)),
                    "starttls" => b.tls(Tls::Required(tls()?)),
                    _ => b.tls(Tls::None),
                };
                if let (Some(u), Some(p)) = (&s.username, &s.password) {
                    b = b.credentials(Credentials::new(u.clone(), p.clone()));
                }
                Some((b.build(), from))
            }
        };
        Ok(Self {
            client,
            webhooks: cfg.webhooks.clone(),
            smtp,
        })
    }

    /// One attempt to deliver a rendered message through its row's channel.
    pub async fn send(
        &self,
        row: &OutboxRow,
        msg: &RenderedMessage,
        unsubscribe_url: Option<String>,
        possible_duplicate: bool,
        now: Millis,
    ) -> Attempt {
        if let Some(endpoint) = row.channel.strip_prefix("webhook:") {
            let body = json!({
                "type": "message",
                "messageId": row.message_id,
                "campaign": row.campaign,
                "variant": row.variant,
                "step": row.step,
                "channel": row.channel,
                "purpose": row.purpose,
                "to": row.to,
                "profile": kairos_core::ProfileId(row.profile).to_string(),
                "subject": msg.subject,
                "html": msg.html,
                "text": msg.text,
                "event": row.event,
                "unsubscribeUrl": unsubscribe_url,
                "queuedAt": format_timestamp(row.queued_at),
                "attempt": row.attempts + 1,
                // An earlier attempt was cut short: the receiver may have it already.
                "possibleDuplicate": possible_duplicate,
            });
            return self
                .post_webhook(endpoint, &body, &row.message_id, now)
                .await;
        }
        if row.channel == "email" {
            return self.send_email(row, msg, unsubscribe_url).await;
        }
        Attempt::Failed {
            reason: format!("unknown channel `{}`", row.channel),
            hard_bounce: false,
        }
    }

    /// Posts `body` to a configured endpoint, signed, with `key` as idempotency key.
    pub async fn post_webhook(
        &self,
        endpoint: &str,
        body: &Value,
        key: &str,
        now: Millis,
    ) -> Attempt {
        let Some(ep) = self.webhooks.get(endpoint) else {
            return Attempt::Failed {
                reason: format!("no webhook endpoint `{endpoint}` is configured ([delivery.webhooks.{endpoint}])"),
                hard_bounce: false,
            };
        };
        let bytes = match serde_json::to_vec(body) {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Failed {
                    reason: format!("body: {e}"),
                    hard_bounce: false,
                }
            }
        };
        let signature = sign(ep.secret.as_bytes(), now.div_euclid(1000), &bytes);
        let sent = self
            .client
            .post(&ep.url)
            .timeout(Duration::from_millis(ep.timeout_ms))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .header("kairos-signature", signature)
            .body(bytes)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                return Attempt::Retry {
                    reason: format!("{endpoint}: {what}: {e}"),
                    after: None,
                    // Never connected: certainly not received. Otherwise it may have been.
                    uncertain: !e.is_connect(),
                };
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Attempt::Delivered;
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let snippet: String = text.chars().take(200).collect();
        let reason = format!("{endpoint}: HTTP {}: {snippet}", status.as_u16());
        match status.as_u16() {
            408 | 425 | 429 | 500..=599 => Attempt::Retry {
                reason,
                after: retry_after,
                uncertain: false,
            },
            _ => Attempt::Failed {
                reason,
                hard_bounce: false,
            },
        }
    }

    async fn send_email(
        &self,
        row: &OutboxRow,
        msg: &RenderedMessage,
        unsubscribe_url: Option<String>,
    ) -> Attempt {
        let Some((transport, from)) = &self.smtp else {
            return Attempt::Failed {
                reason: "no SMTP relay is configured ([delivery.smtp])".into(),
                hard_bounce: false,
            };
        };
        let Some(to) = row.to.as_deref() else {
            return Attempt::Failed {
                reason: "the message has no address".into(),
                hard_bounce: false,
            };
        };
        let to: Mailbox = match to.parse() {
            Ok(m) => m,
            Err(e) => {
                return Attempt::Failed {
                    reason: format!("`{to}` is not a valid address: {e}"),
                    hard_bounce: true,
                }
            }
        };
        let domain = from.email.domain().to_string();
        let mut builder = lettre::Message::builder()
            .from(from.clone())
            .to(to)
            .subject(msg.subject.clone())
            .message_id(Some(format!("<{}@{domain}>", row.message_id)));
        if let Some(url) = &unsubscribe_url {
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        let built = match (&msg.text, &msg.html) {
            (Some(t), Some(h)) => {
                builder.multipart(MultiPart::alternative_plain_html(t.clone(), h.clone()))
            }
            (None, Some(h)) => builder.singlepart(SinglePart::html(h.clone())),
            (Some(t), None) => builder.singlepart(SinglePart::plain(t.clone())),
            (None, None) => builder.singlepart(SinglePart::plain(String::new())),
        };
        let email = match built {
            Ok(m) => m,
            Err(e) => {
                return Attempt::Failed {
                    reason: format!("building the email: {e}"),
                    hard_bounce: false,
                }
            }
        };
        match transport.send(email).await {
            Ok(_) => Attempt::Delivered,
            Err(e) => smtp_outcome(&e),
        }
    }
}

/// SMTP 4xx and network trouble are worth retrying; 5xx are not, and "no such mailbox"
/// (550, 551, 553, or an enhanced 5.1.x code) is a hard bounce of the address.
fn smtp_outcome(e: &lettre::transport::smtp::Error) -> Attempt {
    let reason = format!("smtp: {e}");
    if e.is_permanent() {
        let code = e.status().map(|c| c.to_string()).unwrap_or_default();
        let text = e.to_string();
        let hard_bounce = ["550", "551", "553"].contains(&code.as_str()) || text.contains(" 5.1.");
        return Attempt::Failed {
            reason,
            hard_bounce,
        };
    }
    // A reply code is a clear refusal; a lost connection or a timeout may come after the
    // relay took the message.
    Attempt::Retry {
        reason,
        after: None,
        uncertain: !e.is_transient(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, StatusCode};

    /// A receiver whose answer depends on the path: `/ok`, `/busy` (503), `/slow-down`
    /// (429, Retry-After: 7), `/bad` (400), `/hang` (never answers in time).
    async fn receiver() -> String {
        async fn answer(
            axum::extract::Path(p): axum::extract::Path<String>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> (StatusCode, HeaderMap, String) {
            let mut h = HeaderMap::new();
            let sig = headers
                .get("kairos-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert!(
                verify(b"endpoint-secret", sig, &body, 1_800_000_000, 60).is_ok(),
                "{sig}"
            );
            match p.as_str() {
                "ok" => (StatusCode::OK, h, "ok".into()),
                "busy" => (StatusCode::SERVICE_UNAVAILABLE, h, "busy".into()),
                "slow-down" => {
                    h.insert(
                        "retry-after",
                        "7".parse().unwrap_or_else(|_| unreachable!()),
                    );
                    (StatusCode::TOO_MANY_REQUESTS, h, String::new())
                }
                "hang" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    (StatusCode::OK, h, String::new())
                }
                _ => (StatusCode::BAD_REQUEST, h, "field `to` is required".into()),
            }
        }
        let app = axum::Router::new().route("/{p}", axum::routing::post(answer));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let base = format!(
            "http://{}",
            l.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        tokio::spawn(async move { axum::serve(l, app).await });
        base
    }

    fn channels(base: &str) -> Channels {
        let mut cfg = DeliveryConfig::default();
        for (name, path, timeout_ms) in [
            ("ok", "ok", 2_000),
            ("busy", "busy", 2_000),
            ("slow", "slow-down", 2_000),
            ("bad", "bad", 2_000),
            ("hang", "hang", 200),
        ] {
            cfg.webhooks.insert(
                name.into(),
                WebhookEndpointConfig {
                    url: format!("{base}/{path}"),
                    secret: "endpoint-secret".into(),
                    timeout_ms,
                },
            );
        }
        cfg.webhooks.insert(
            "closed".into(),
            WebhookEndpointConfig {
                url: "http://127.0.0.1:9/nothing-listens".into(),
                secret: "endpoint-secret".into(),
                timeout_ms: 2_000,
            },
        );
        Channels::new(&cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn webhook_answers_are_classified_into_delivered_retry_and_permanent() {
        let base = receiver().await;
        let c = channels(&base);
        let now = 1_800_000_000_000;
        let body = json!({"x": 1});
        let post = |ep: &'static str| c.post_webhook(ep, &body, "key-1", now);
        assert!(matches!(post("ok").await, Attempt::Delivered));
        assert!(matches!(
            post("busy").await,
            Attempt::Retry { after: None, .. }
        ));
        match post("slow").await {
            Attempt::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(7))),
            other => panic!("{other:?}"),
        }
        match post("bad").await {
            Attempt::Failed {
                reason,
                hard_bounce,
            } => {
                assert!(
                    reason.contains("HTTP 400: field `to` is required"),
                    "{reason}"
                );
                assert!(!hard_bounce);
            }
            other => panic!("{other:?}"),
        }
        match post("hang").await {
            Attempt::Retry {
                reason, uncertain, ..
            } => {
                assert!(reason.contains("timed out"), "{reason}");
                assert!(uncertain, "a timed-out request may have been received");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            post("closed").await,
            Attempt::Retry {
                uncertain: false,
                ..
            }
        ));
        assert!(matches!(post("unknown").await, Attempt::Failed { .. }));
    }

    #[test]
    fn backoff_grows_exponentially_with_full_jitter_under_a_cap_and_honours_retry_after() {
        use crate::delivery::backoff;
        for attempt in 0..12u32 {
            let cap = (1_000u64 << attempt).min(60_000);
            for _ in 0..200 {
                let d = backoff(1_000, 60_000, attempt, None).as_millis() as u64;
                assert!(
                    (500..cap.max(501)).contains(&d),
                    "attempt {attempt}: {d} ms"
                );
            }
        }
        // Spread: not a fixed delay.
        let draws: std::collections::HashSet<u128> = (0..50)
            .map(|_| backoff(1_000, 60_000, 6, None).as_millis())
            .collect();
        assert!(draws.len() > 10);
        assert!(
            backoff(1_000, 60_000, 0, Some(Duration::from_secs(30))) >= Duration::from_secs(30)
        );
    }

    #[test]
    fn signatures_verify_and_refuse_tampering_old_timestamps_and_wrong_secrets() {
        let body = br#"{"messageId":"m1"}"#;
        let h = sign(b"s3cret-key", 1_800_000_000, body);
        assert!(h.starts_with("t=1800000000,v1="));
        assert_eq!(verify(b"s3cret-key", &h, body, 1_800_000_100, 300), Ok(()));
        assert_eq!(
            verify(b"s3cret-key", &h, b"{}", 1_800_000_100, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"other-key!", &h, body, 1_800_000_100, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret-key", &h, body, 1_800_001_000, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(b"s3cret-key", "v1=abc", body, 0, 300),
            Err(VerifyError::Malformed)
        );
        // During a rotation both signatures are sent; either secret verifies.
        let old = sign(b"old-secret", 1_800_000_000, body);
        let both = format!(
            "{h},{}",
            old.split_once(',').map(|(_, v)| v).unwrap_or_default()
        );
        assert_eq!(
            verify(b"old-secret", &both, body, 1_800_000_000, 300),
            Ok(())
        );
        // Known answer (computed independently with Python's hmac module).
        assert_eq!(
            sign(b"key", 1, b"body"),
            "t=1,v1=91b5374b153842ad05b2c4eab9349b8321b14703165bd3fb8b034dfb8be98ae5"
        );
    }
}
