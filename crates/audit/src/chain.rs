//! The audit log's hash chain. Each event's hash covers the previous hash, its sequence
//! number, its time and its body, so that editing, deleting or reordering any event breaks
//! every hash after it.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of one event, as lowercase hex.
pub fn hash(prev: &str, seq: i64, at: i64, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(at.to_string().as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// The end of the chain: how many events it has (the sequence number of the last one) and
/// the hash of the last one ([`GENESIS`] for an empty chain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: i64,
    pub at: i64,
    pub body: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Where the chain broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at event {seq}: {why}")]
pub struct Broken {
    pub seq: i64,
    pub why: String,
}

/// Checks events handed over in order, one page at a time.
#[derive(Clone, Debug)]
pub struct Verifier {
    prev: String,
    next_seq: i64,
    pub checked: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            prev: GENESIS.to_owned(),
            next_seq: 1,
            checked: 0,
        }
    }
}

impl Verifier {
    pub fn check(&mut self, e: &StoredEvent) -> Result<(), Broken> {
        let broken = |why: String| Broken { seq: e.seq, why };
        if e.seq != self.next_seq {
            return Err(broken(format!(
                "expected event {} next (an event was deleted or reordered)",
                self.next_seq
            )));
        }
        if e.prev_hash != self.prev {
            return Err(broken(
                "its prev_hash is not the previous event's hash".into(),
            ));
        }
        if hash(&e.prev_hash, e.seq, e.at, &e.body) != e.hash {
            return Err(broken(
                "its contents do not match its hash (it was edited)".into(),
            ));
        }
        self.prev = e.hash.clone();
        self.next_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// The hash of the last event checked: what a later check continues from.
    pub fn head(&self) -> &str {
        &self.prev
    }
}

/// SHA-256 of some bytes, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
