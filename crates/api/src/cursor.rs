//! Opaque page cursors (PRODUCT.md §6: "Lists are paged with opaque cursors").
//!
//! A list answers one page and, when more follow, a `next_cursor`; the caller passes it back
//! as `cursor` for the next page. A cursor holds the place where its page ended (the
//! `created_at` and id of the last item, or an audit event's sequence number), so that the
//! next page is a keyset read that starts there: items created meanwhile neither shift the
//! pages nor repeat on them, and a deep page costs what the first does.
//!
//! The text is URL-safe base64 (no padding) of a small JSON object with a version (`v`), the
//! place, and a check (`c`): the first 8 bytes of a SHA-256 over the place and over what the
//! cursor was made for (the list, the caller and the list's filters). A cursor that does not
//! decode, was altered, or is used on another list, by another caller or with other filters
//! is refused (400) rather than read as some other place. The check is not a secret: someone
//! who forges one only starts a page of a list they may read anyway somewhere else, because
//! what a caller may see is decided by the query, never by the cursor.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::Timestamp;
use engine::Position;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ApiError;

/// The longest cursor accepted, in characters (ours are about 110).
pub const MAX_LEN: usize = proto::schema::MAX_CURSOR;

/// The version written into cursors; others are refused.
const VERSION: u32 = 1;

/// What a cursor was made for: a list (`requests`, `grants`, `audit`, or a portal page), the
/// caller, and the filters the list was read with (the page size is not one: it may change
/// from page to page).
#[derive(Clone, Debug)]
pub struct Scope<'a> {
    pub list: &'static str,
    pub caller: &'a str,
    pub filters: Vec<(&'static str, Option<&'a str>)>,
}

impl<'a> Scope<'a> {
    pub fn new(list: &'static str, caller: &'a str) -> Scope<'a> {
        Scope {
            list,
            caller,
            filters: vec![],
        }
    }

    pub fn filter(mut self, name: &'static str, value: Option<&'a str>) -> Scope<'a> {
        self.filters.push((name, value));
        self
    }

    /// The check over this scope and a place: each part length-prefixed, so that no two
    /// different inputs run together into the same bytes.
    fn check(&self, place: &Place) -> String {
        let mut h = Sha256::new();
        let mut part = |s: &str| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        };
        part("countersign cursor");
        part(&VERSION.to_string());
        part(self.list);
        part(self.caller);
        for (name, value) in &self.filters {
            part(name);
            match value {
                Some(v) => {
                    part("=");
                    part(v);
                }
                None => part("-"),
            }
        }
        match place {
            Place::At { at, id } => {
                part("at");
                part(&at.to_string());
                part(id);
            }
            Place::Seq(seq) => {
                part("seq");
                part(&seq.to_string());
            }
        }
        hex(&h.finalize()[..8])
    }

    /// A cursor for the page after `p` in this scope's list.
    pub fn position_cursor(&self, p: &Position) -> String {
        self.encode(Place::At {
            at: p.created_at.millis(),
            id: p.id.clone(),
        })
    }

    /// A cursor for the events after sequence number `seq`.
    pub fn seq_cursor(&self, seq: i64) -> String {
        self.encode(Place::Seq(seq))
    }

    fn encode(&self, place: Place) -> String {
        let c = self.check(&place);
        let wire = Wire {
            v: VERSION,
            at: match &place {
                Place::At { at, .. } => Some(*at),
                Place::Seq(_) => None,
            },
            id: match &place {
                Place::At { id, .. } => Some(id.clone()),
                Place::Seq(_) => None,
            },
            seq: match place {
                Place::Seq(s) => Some(s),
                Place::At { .. } => None,
            },
            c,
        };
        // A struct of numbers and short strings always serialises.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// The position a cursor of this scope's list holds.
    pub fn position(&self, text: &str) -> Result<Position, ApiError> {
        match self.decode(text)? {
            Place::At { at, id } => Ok(Position {
                created_at: Timestamp::from_millis(at),
                id,
            }),
            Place::Seq(_) => Err(foreign()),
        }
    }

    /// The sequence number an audit cursor holds.
    pub fn seq(&self, text: &str) -> Result<i64, ApiError> {
        match self.decode(text)? {
            Place::Seq(s) => Ok(s),
            Place::At { .. } => Err(foreign()),
        }
    }

    fn decode(&self, text: &str) -> Result<Place, ApiError> {
        if text.is_empty() || text.len() > MAX_LEN {
            return Err(malformed());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| malformed())?;
        let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
        if wire.v != VERSION {
            return Err(malformed());
        }
        let place = match (wire.at, wire.id, wire.seq) {
            (Some(at), Some(id), None) if at >= 0 && plausible_id(&id) => Place::At { at, id },
            (None, None, Some(seq)) if seq >= 0 => Place::Seq(seq),
            _ => return Err(malformed()),
        };
        if self.check(&place) != wire.c {
            return Err(foreign());
        }
        Ok(place)
    }
}

/// Where a page ended.
enum Place {
    At { at: i64, id: String },
    Seq(i64),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    c: String,
}

/// Ids are UUIDs; a few more characters of the same kind are allowed.
fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn malformed() -> ApiError {
    ApiError::malformed(
        "malformed cursor: pass back the next_cursor of the previous page as it was given",
    )
}

fn foreign() -> ApiError {
    ApiError::malformed(
        "this cursor was given out for another list, another caller or other filters; \
         start again without a cursor",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope<'a>(caller: &'a str, state: Option<&'a str>) -> Scope<'a> {
        Scope::new("requests", caller).filter("state", state)
    }

    #[test]
    fn lists_6_a_cursor_holds_its_place_and_is_bound_to_its_list() {
        let p = Position {
            created_at: Timestamp::from_millis(1_767_225_600_000),
            id: "019b7a3e-0000-7000-8000-000000000001".into(),
        };
        let s = scope("alice@example.com", Some("pending"));
        let text = s.position_cursor(&p);
        assert!(text.len() < 200, "{text}");
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe: {text}"
        );
        assert_eq!(s.position(&text).expect("present"), p);
        // Another caller, other filters, another list, or an audit cursor: refused.
        assert!(
            scope("bob@example.com", Some("pending"))
                .position(&text)
                .is_err()
        );
        assert!(scope("alice@example.com", None).position(&text).is_err());
        assert!(
            Scope::new("grants", "alice@example.com")
                .filter("state", Some("pending"))
                .position(&text)
                .is_err()
        );
        let audit = Scope::new("audit", "root@example.com");
        assert_eq!(audit.seq(&audit.seq_cursor(42)).expect("present"), 42);
        assert!(audit.position(&audit.seq_cursor(42)).is_err());
    }

    #[test]
    fn lists_6_altered_or_malformed_cursors_are_refused() {
        let s = scope("alice@example.com", None);
        let p = Position {
            created_at: Timestamp::from_millis(5),
            id: "abc".into(),
        };
        let text = s.position_cursor(&p);
        // Every single-character change is caught, by the decoder or by the check.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for i in 0..text.len() {
            for c in alphabet.chars().step_by(7) {
                let mut t = text.clone();
                if t.as_bytes()[i] == c as u8 {
                    continue;
                }
                t.replace_range(i..=i, &c.to_string());
                if let Ok(q) = s.position(&t) {
                    // Only an equivalent encoding of the same bytes can pass (base64's
                    // unused low bits of the last character).
                    assert_eq!(q, p, "{t}");
                }
            }
        }
        // A forged place with the old check.
        let wire: Wire = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&text).expect("present"))
            .expect("present");
        let forged = Wire {
            at: Some(6),
            ..wire
        };
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("present"));
        assert!(s.position(&forged).is_err());
        for bad in [
            "",
            "x",
            "!!!",
            "e30",                                            // {}
            &URL_SAFE_NO_PAD.encode(b"{\"v\":2,\"c\":\"\"}"), // another version
            &"A".repeat(MAX_LEN + 1),
        ] {
            assert!(s.position(bad).is_err(), "{bad:?}");
        }
    }
}
