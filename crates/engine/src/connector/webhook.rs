//! The `webhook` connector and the Standard Webhooks signature it (and, later, request
//! callbacks) uses.
//!
//! Each call is a POST of `{"type": "grant.activate" | "grant.revoke" | "grant.check", "data":
//! {…}}` (the same `data` an exec program reads) with the headers `webhook-id` (stable across
//! retries of one call), `webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">`. Any 2xx is success; a redirect is a failure and is
//! never followed. A check call expects `{"in_effect": true | false}` back.

use std::error::Error as _;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use config::WebhookConnector;
use domain::{Grant, Timestamp};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Action, Call, Connector, describe, truncate};
use crate::outbound::{Guard, shown};

/// The key a secret stands for: Standard Webhooks writes keys as `whsec_<base64>`; any other
/// text is used as it is.
pub fn secret_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The `webhook-signature` header value for one message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

pub struct Webhook {
    def: WebhookConnector,
    /// The URL as errors show it: without credentials or query (either may hold a token).
    shown: String,
    key: Vec<u8>,
    http: Result<reqwest::Client, String>,
    guard: Guard,
}

impl Webhook {
    /// A connector whose calls go only where `guard` allows (rule 26).
    pub fn new(def: WebhookConnector, guard: Guard) -> Webhook {
        let http = guard.client(std::time::Duration::from_secs(def.timeout.secs()));
        Webhook {
            shown: shown(&def.url),
            key: secret_key(&def.secret),
            def,
            http,
            guard,
        }
    }

    async fn post(
        &self,
        id: &str,
        kind: &str,
        g: &Grant,
        now: Timestamp,
    ) -> Result<String, String> {
        let http = self.http.as_ref().map_err(Clone::clone)?;
        self.guard.check_literal(&self.def.url)?;
        let body = serde_json::json!({
            "type": format!("grant.{kind}"),
            "data": describe(kind, g),
        })
        .to_string();
        let ts = now.millis().div_euclid(1000);
        let resp = post_signed(http, &self.def.url, &self.key, id, ts, body)
            .await
            .map_err(|e| format!("POST {} {e}", self.shown))?;
        let status = resp.status();
        let answer = read_capped(resp, MAX_ANSWER).await;
        if status.is_success() {
            return match answer {
                Answer::Whole(text) => Ok(text),
                // A grant or revoke needs nothing from the body; a check does.
                Answer::TooLarge(_) if kind != "check" => Ok(String::new()),
                Answer::TooLarge(_) => Err(format!(
                    "POST {} answered {status} with more than {MAX_ANSWER} bytes",
                    self.shown
                )),
            };
        }
        let (Answer::Whole(text) | Answer::TooLarge(text)) = answer;
        Err(format!(
            "POST {} answered {}: {}",
            self.shown,
            status,
            truncate(text.trim().to_owned(), 512)
        ))
    }
}

/// The most of a receiver's answer that is read, in bytes: a check's answer is a few bytes,
/// and an error's is shown truncated to 512 characters.
pub const MAX_ANSWER: usize = 64 * 1024;

/// A receiver's answer, read up to a limit.
enum Answer {
    Whole(String),
    /// The first bytes of an answer longer than the limit; the rest was not read.
    TooLarge(String),
}

/// Reads the body a chunk at a time and stops past `max` bytes, so that a receiver cannot
/// make a call read (and hold in memory) more than that. A body that fails midway is what
/// arrived until then.
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Answer {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        if body.len() + chunk.len() > max {
            let room = max - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Answer::TooLarge(String::from_utf8_lossy(&body).into_owned());
        }
        body.extend_from_slice(&chunk);
    }
    Answer::Whole(String::from_utf8_lossy(&body).into_owned())
}

/// reqwest's error with its causes: the first line alone often says only "error sending
/// request".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[async_trait]
impl Connector for Webhook {
    async fn call(&self, call: &Call<'_>) -> Result<(), String> {
        let kind = match call.action {
            Action::Grant => "activate",
            Action::Revoke => "revoke",
        };
        self.post(&call.id, kind, call.grant, call.now)
            .await
            .map(drop)
    }

    async fn check(&self, grant: &Grant, now: Timestamp) -> Result<Option<bool>, String> {
        if !self.def.check {
            return Ok(None);
        }
        let id = format!("msg_{}_check_{}", grant.id, now.millis());
        let text = self.post(&id, "check", grant, now).await?;
        #[derive(serde::Deserialize)]
        struct Answer {
            in_effect: bool,
        }
        serde_json::from_str::<Answer>(&text)
            .map(|a| Some(a.in_effect))
            .map_err(|e| format!("the check answer is not {{\"in_effect\": bool}}: {e}"))
    }

    fn can_check(&self) -> bool {
        self.def.check
    }
}

/// POSTs `body` as JSON, signed with the Standard Webhooks scheme under `key` (`webhook-id`
/// `id`, `webhook-timestamp` `ts`): the one signed POST of the webhook connector and of the
/// audit checkpoint webhook. A failure is `failed: <causes>` or `timed out: <causes>`,
/// without the URL (reqwest's own text names it, and a URL may hold a token).
pub(crate) async fn post_signed(
    http: &reqwest::Client,
    url: &str,
    key: &[u8],
    id: &str,
    ts: i64,
    body: String,
) -> Result<reqwest::Response, String> {
    let signature = sign(key, id, ts, body.as_bytes());
    http.post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            let cause = e.source().map(error_chain).unwrap_or_default();
            let kind = if e.is_timeout() {
                "timed out"
            } else {
                "failed"
            };
            format!("{kind}: {cause}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
