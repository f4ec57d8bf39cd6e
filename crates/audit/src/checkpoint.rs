//! Signed checkpoints: the server signs `(event count, head hash, time)` and keeps the
//! signature outside the database, so that a later check can tell whether the chain it reads
//! still holds what was signed.
//!
//! A checkpoint is one line of JSON, the same in the checkpoint file and in the webhook body:
//!
//! ```json
//! {"v":1,"count":42,"head":"<hex>","at":"2026-01-01T00:05:00.000Z","key_id":"ed25519:…","sig":"<base64>"}
//! ```
//!
//! The signature covers [`Checkpoint::message`], a fixed text made of `count`, `head` and
//! `at`, never the JSON itself, so that whitespace or key order cannot matter.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::chain::Head;
use crate::key::{PublicKey, SigningKey};

/// The longest checkpoint line read; a real one is about 230 bytes.
pub const MAX_LINE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The format: 1.
    pub v: u32,
    /// How many events the chain had: the sequence number of the last one.
    pub count: i64,
    /// The hash of event `count` (the genesis hash for an empty chain).
    pub head: String,
    /// When it was signed (RFC 3339, UTC).
    pub at: String,
    /// The signing key's id (`PublicKey::key_id`).
    pub key_id: String,
    /// The Ed25519 signature of [`Checkpoint::message`], in base64.
    pub sig: String,
}

/// Why a checkpoint line is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a checkpoint: {0}")]
    Malformed(String),
    #[error("signed by key {0}, which is not a key given to check with")]
    UnknownKey(String),
    #[error("bad signature: the line was altered or not signed by key {0}")]
    BadSignature(String),
}

impl Checkpoint {
    /// The bytes that are signed.
    pub fn message(&self) -> String {
        signed_text(self.count, &self.head, &self.at)
    }

    /// Signs the head of a chain at time `at` (RFC 3339).
    pub fn sign(key: &SigningKey, head: &Head, at: &str) -> Checkpoint {
        let sig = key.sign(signed_text(head.seq, &head.hash, at).as_bytes());
        Checkpoint {
            v: 1,
            count: head.seq,
            head: head.hash.clone(),
            at: at.to_owned(),
            key_id: key.public_key().key_id(),
            sig: STANDARD.encode(sig),
        }
    }

    /// The line written to the file and posted to the webhook (no newline).
    pub fn to_line(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads one line and checks its signature with whichever of `keys` its `key_id` names.
    pub fn verify_line(line: &str, keys: &[PublicKey]) -> Result<Checkpoint, Refused> {
        if line.len() > MAX_LINE {
            return Err(Refused::Malformed(format!(
                "the line is longer than {MAX_LINE} bytes"
            )));
        }
        let cp: Checkpoint =
            serde_json::from_str(line).map_err(|e| Refused::Malformed(e.to_string()))?;
        if cp.v != 1 {
            return Err(Refused::Malformed(format!("unknown version {}", cp.v)));
        }
        if cp.count < 0 {
            return Err(Refused::Malformed("a negative count".into()));
        }
        let key = keys
            .iter()
            .find(|k| k.key_id() == cp.key_id)
            .ok_or_else(|| Refused::UnknownKey(cp.key_id.clone()))?;
        let sig = STANDARD
            .decode(&cp.sig)
            .map_err(|_| Refused::BadSignature(cp.key_id.clone()))?;
        if !key.verify(cp.message().as_bytes(), &sig) {
            return Err(Refused::BadSignature(cp.key_id.clone()));
        }
        Ok(cp)
    }
}

fn signed_text(count: i64, head: &str, at: &str) -> String {
    format!("countersign audit checkpoint v1\ncount {count}\nhead {head}\nat {at}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::parse(&SigningKey::generate_pem().expect("keygen")).expect("key")
    }

    fn head() -> Head {
        Head {
            seq: 42,
            hash: "ab".repeat(32),
        }
    }

    #[test]
    fn hardening_3_a_signed_line_verifies() {
        let k = key();
        let line = Checkpoint::sign(&k, &head(), "2026-01-01T00:05:00.000Z").to_line();
        let cp = Checkpoint::verify_line(&line, &[*k.public_key()]).expect("verifies");
        assert_eq!((cp.count, cp.head), (42, "ab".repeat(32)));
    }

    /// Item 3: a checkpoint whose count, head or time was changed, or whose signature was
    /// replaced, is refused.
    #[test]
    fn hardening_3_an_altered_checkpoint_is_refused() {
        let k = key();
        let cp = Checkpoint::sign(&k, &head(), "2026-01-01T00:05:00.000Z");
        let keys = [*k.public_key()];
        let mut more = cp.clone();
        more.count = 41;
        let mut other_head = cp.clone();
        other_head.head = "cd".repeat(32);
        let mut later = cp.clone();
        later.at = "2026-01-02T00:05:00.000Z".into();
        let mut garbage = cp.clone();
        garbage.sig = "not base64!".into();
        let mut foreign = Checkpoint::sign(&key(), &head(), &cp.at);
        foreign.key_id = cp.key_id.clone();
        for bad in [more, other_head, later, garbage, foreign] {
            assert!(
                matches!(
                    Checkpoint::verify_line(&bad.to_line(), &keys),
                    Err(Refused::BadSignature(_))
                ),
                "{bad:?}"
            );
        }
        let unknown = Checkpoint::sign(&key(), &head(), &cp.at);
        assert!(matches!(
            Checkpoint::verify_line(&unknown.to_line(), &keys),
            Err(Refused::UnknownKey(_))
        ));
        for junk in ["", "{}", "not json", &"x".repeat(MAX_LINE + 1)] {
            assert!(matches!(
                Checkpoint::verify_line(junk, &keys),
                Err(Refused::Malformed(_))
            ));
        }
    }
}
