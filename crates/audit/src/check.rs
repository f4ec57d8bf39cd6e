//! Checking a chain against signed checkpoints.
//!
//! [`ChainCheck`] is fed the events in order, a page at a time, and recomputes every hash from
//! the event bodies: it never trusts a stored hash. It reports four kinds of finding:
//!
//! - the stored chain is inconsistent (an event edited without recomputing, deleted from the
//!   middle, or reordered): the first place it breaks;
//! - a checkpoint signed a head that the recomputed chain does not reach at that count
//!   (rewritten: an event was changed and every later hash recomputed, or one was removed);
//! - the chain is shorter than a checkpoint (truncated: the newest events were deleted);
//! - a checkpoint line that is malformed, signed by an unknown key, or badly signed
//!   (refused; it proves nothing either way).

use std::collections::BTreeMap;
use std::fmt;

use crate::chain::{GENESIS, StoredEvent, Verifier, hash};
use crate::checkpoint::{Checkpoint, Refused};

/// One line of a checkpoint file: its number, and the checkpoint or why it was refused.
pub type Line = (usize, Result<Checkpoint, Refused>);

/// One thing wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Checkpoint line `line` of the file was refused.
    Refused { line: usize, why: Refused },
    /// The stored chain itself is inconsistent at event `seq`.
    Broken { seq: i64, why: String },
    /// The chain ends at `have` events, but the checkpoint on `line` signed `count`.
    Truncated {
        line: usize,
        count: i64,
        have: i64,
        at: String,
    },
    /// At event `count` the hash recomputed from the bodies is not the signed head.
    Rewritten {
        line: usize,
        count: i64,
        signed: String,
        recomputed: String,
        at: String,
    },
    /// The chain goes past `count` but has no event `count` (it was deleted).
    Missing { line: usize, count: i64, at: String },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Refused { line, why } => {
                write!(f, "REFUSED: checkpoint on line {line}: {why}")
            }
            Finding::Broken { seq, why } => {
                write!(f, "BROKEN: audit chain broken at event {seq}: {why}")
            }
            Finding::Truncated {
                line,
                count,
                have,
                at,
            } => write!(
                f,
                "TRUNCATED: the chain has {have} events, but the checkpoint on line {line} \
                 (signed {at}) covers {count}: events were deleted"
            ),
            Finding::Rewritten {
                line,
                count,
                signed,
                recomputed,
                at,
            } => write!(
                f,
                "REWRITTEN: at event {count} the hash recomputed from the events is {recomputed}, \
                 but the checkpoint on line {line} (signed {at}) has {signed}: events up to \
                 {count} were changed"
            ),
            Finding::Missing { line, count, at } => write!(
                f,
                "REWRITTEN: the chain has no event {count}, which the checkpoint on line {line} \
                 (signed {at}) covers: events were deleted"
            ),
        }
    }
}

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Events read.
    pub events: u64,
    /// The sequence number of the last event read (0 for an empty chain).
    pub last_seq: i64,
    /// Checkpoints whose signature verified.
    pub checkpoints: usize,
    /// The latest verified checkpoint, by count.
    pub newest: Option<Checkpoint>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

/// The check in progress.
#[derive(Debug)]
pub struct ChainCheck {
    /// Verified checkpoints by count, each with its line number.
    pending: BTreeMap<i64, Vec<(usize, Checkpoint)>>,
    checkpoints: usize,
    newest: Option<Checkpoint>,
    stored: Verifier,
    stored_broken: bool,
    recomputed: String,
    events: u64,
    last_seq: i64,
    findings: Vec<Finding>,
}

impl ChainCheck {
    /// Starts a check with the lines of a checkpoint file already verified or refused
    /// (`Checkpoint::verify_line`), each with its line number.
    pub fn new(lines: Vec<Line>) -> ChainCheck {
        let mut check = ChainCheck {
            pending: BTreeMap::new(),
            checkpoints: 0,
            newest: None,
            stored: Verifier::default(),
            stored_broken: false,
            recomputed: GENESIS.to_owned(),
            events: 0,
            last_seq: 0,
            findings: vec![],
        };
        for (line, result) in lines {
            match result {
                Ok(cp) => {
                    check.checkpoints += 1;
                    if check.newest.as_ref().is_none_or(|n| cp.count >= n.count) {
                        check.newest = Some(cp.clone());
                    }
                    if cp.count == 0 {
                        check.at_count(line, &cp, GENESIS.to_owned());
                    } else {
                        check.pending.entry(cp.count).or_default().push((line, cp));
                    }
                }
                Err(why) => check.findings.push(Finding::Refused { line, why }),
            }
        }
        check
    }

    fn at_count(&mut self, line: usize, cp: &Checkpoint, recomputed: String) {
        if cp.head != recomputed {
            self.findings.push(Finding::Rewritten {
                line,
                count: cp.count,
                signed: cp.head.clone(),
                recomputed,
                at: cp.at.clone(),
            });
        }
    }

    /// Checks the next event of the chain.
    pub fn feed(&mut self, e: &StoredEvent) {
        if !self.stored_broken
            && let Err(b) = self.stored.check(e)
        {
            self.stored_broken = true;
            self.findings.push(Finding::Broken {
                seq: b.seq,
                why: b.why,
            });
        }
        // The hash the event would have if the chain before it were what was recorded.
        self.recomputed = hash(&self.recomputed, e.seq, e.at, &e.body);
        self.events += 1;
        // Checkpoints for counts this event skipped over name events that are gone.
        let skipped: Vec<i64> = self
            .pending
            .range(self.last_seq + 1..e.seq)
            .map(|(c, _)| *c)
            .collect();
        for count in skipped {
            for (line, cp) in self.pending.remove(&count).unwrap_or_default() {
                self.findings.push(Finding::Missing {
                    line,
                    count,
                    at: cp.at,
                });
            }
        }
        if let Some(at_seq) = self.pending.remove(&e.seq) {
            let recomputed = self.recomputed.clone();
            for (line, cp) in at_seq {
                self.at_count(line, &cp, recomputed.clone());
            }
        }
        self.last_seq = self.last_seq.max(e.seq);
    }

    /// Ends the check: every checkpoint not reached is a truncation.
    pub fn finish(mut self) -> Report {
        for (count, cps) in std::mem::take(&mut self.pending) {
            for (line, cp) in cps {
                self.findings.push(if count > self.last_seq {
                    Finding::Truncated {
                        line,
                        count,
                        have: self.last_seq,
                        at: cp.at,
                    }
                } else {
                    Finding::Missing {
                        line,
                        count,
                        at: cp.at,
                    }
                });
            }
        }
        Report {
            events: self.events,
            last_seq: self.last_seq,
            checkpoints: self.checkpoints,
            newest: self.newest,
            findings: self.findings,
        }
    }
}

/// Milliseconds since the Unix epoch of a time as the API writes event times: RFC 3339 in
/// UTC, `2026-01-01T00:00:00Z` or with a fraction of a second (`…:00.25Z`); `None` for
/// anything else, or for a time finer than a millisecond (event times are whole
/// milliseconds).
pub fn millis_of(rfc3339: &str) -> Option<i64> {
    let b = rfc3339.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' || b.last() != Some(&b'Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = rfc3339.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let ms = match &rfc3339[19..rfc3339.len() - 1] {
        "" => 0,
        frac => {
            let digits = frac.strip_prefix('.')?;
            if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit())
            {
                return None;
            }
            if digits.len() > 3 && digits[3..].bytes().any(|c| c != b'0') {
                return None;
            }
            let mut three = digits[..digits.len().min(3)].to_owned();
            while three.len() < 3 {
                three.push('0');
            }
            three.parse::<i64>().ok()?
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // Howard Hinnant's `days_from_civil`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Head;
    use crate::key::SigningKey;

    /// A consistent chain of `n` events.
    fn chain(n: i64) -> Vec<StoredEvent> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let at = 1_767_225_600_000 + seq;
                let body = format!("{{\"kind\":\"e\",\"n\":{seq}}}");
                let h = hash(&prev, seq, at, &body);
                StoredEvent {
                    seq,
                    at,
                    body,
                    prev_hash: std::mem::replace(&mut prev, h.clone()),
                    hash: h,
                }
            })
            .collect()
    }

    /// Rewrites event `k`'s body and recomputes every later hash, as an attacker with write
    /// access to the database would.
    fn rewrite(events: &mut [StoredEvent], k: i64) {
        let mut prev = GENESIS.to_owned();
        for e in events.iter_mut() {
            if e.seq == k {
                e.body = e.body.replace("\"e\"", "\"x\"");
            }
            e.prev_hash = prev.clone();
            e.hash = hash(&prev, e.seq, e.at, &e.body);
            prev = e.hash.clone();
        }
    }

    fn signed(key: &SigningKey, events: &[StoredEvent], counts: &[i64]) -> Vec<String> {
        counts
            .iter()
            .map(|&c| {
                let head = match c {
                    0 => Head::default(),
                    c => Head {
                        seq: c,
                        hash: events[usize::try_from(c - 1).expect("count")].hash.clone(),
                    },
                };
                Checkpoint::sign(key, &head, "2026-01-01T00:05:00.000Z").to_line()
            })
            .collect()
    }

    fn check(key: &SigningKey, lines: &[String], events: &[StoredEvent]) -> Report {
        let keys = [*key.public_key()];
        let mut c = ChainCheck::new(
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| (i + 1, Checkpoint::verify_line(l, &keys)))
                .collect(),
        );
        for e in events {
            c.feed(e);
        }
        c.finish()
    }

    fn kinds(r: &Report) -> Vec<String> {
        r.findings
            .iter()
            .map(|f| f.to_string().split(':').next().unwrap_or("").to_owned())
            .collect()
    }

    fn key() -> SigningKey {
        SigningKey::parse(&SigningKey::generate_pem().expect("keygen")).expect("key")
    }

    #[test]
    fn hardening_3_a_good_chain_with_good_checkpoints_passes() {
        let k = key();
        let events = chain(10);
        let lines = signed(&k, &events, &[0, 3, 7, 10]);
        let r = check(&k, &lines, &events);
        assert!(r.ok(), "{:?}", r.findings);
        assert_eq!((r.events, r.checkpoints), (10, 4));
        assert_eq!(r.newest.map(|c| c.count), Some(10));
        // Events after the last checkpoint are fine: the chain grows.
        let longer = chain(12);
        assert!(check(&k, &lines, &longer).ok());
    }

    /// Item 3 (PRODUCT.md §7): deleting the newest events leaves a consistent chain that only
    /// a checkpoint can tell is short.
    #[test]
    fn hardening_3_truncation_is_reported() {
        let k = key();
        let events = chain(10);
        let lines = signed(&k, &events, &[5, 10]);
        let r = check(&k, &lines, &events[..8]);
        assert_eq!(kinds(&r), ["TRUNCATED"], "{:?}", r.findings);
        assert!(r.findings[0].to_string().contains("the chain has 8 events"));
        assert!(r.findings[0].to_string().contains("covers 10"));
    }

    /// Item 3 (PRODUCT.md §7): an event rewritten with every later hash recomputed keeps the
    /// stored chain consistent; the checkpoint's head no longer matches.
    #[test]
    fn hardening_3_a_rewrite_with_recomputed_hashes_is_reported() {
        let k = key();
        let mut events = chain(10);
        let lines = signed(&k, &events, &[2, 6, 10]);
        rewrite(&mut events, 4);
        let mut v = Verifier::default();
        assert!(
            events.iter().all(|e| v.check(e).is_ok()),
            "stored chain looks intact"
        );
        let r = check(&k, &lines, &events);
        assert_eq!(kinds(&r), ["REWRITTEN", "REWRITTEN"], "{:?}", r.findings);
        assert!(r.findings[0].to_string().contains("at event 6"));
    }

    /// A stored hash is never trusted: an edit without recomputing is broken; a middle event
    /// deleted and the rest renumbered cannot hide from a checkpoint at its count.
    #[test]
    fn hardening_3_edits_and_deletions_in_the_middle_are_reported() {
        let k = key();
        let events = chain(10);
        let lines = signed(&k, &events, &[5, 10]);
        let mut edited = events.clone();
        edited[2].body = edited[2].body.replace("\"e\"", "\"x\"");
        assert_eq!(
            kinds(&check(&k, &lines, &edited)),
            ["BROKEN", "REWRITTEN", "REWRITTEN"]
        );
        let mut gap = events.clone();
        gap.remove(4); // event 5, exactly at a checkpoint
        assert_eq!(
            kinds(&check(&k, &lines, &gap)),
            ["BROKEN", "REWRITTEN", "REWRITTEN"]
        );
    }

    /// Item 3: a checkpoint line with a bad signature is refused and reported, and proves
    /// nothing.
    #[test]
    fn hardening_3_a_badly_signed_checkpoint_is_refused() {
        let k = key();
        let events = chain(10);
        let mut lines = signed(&k, &events, &[10]);
        // A forged checkpoint claiming a shorter chain, signed by someone else.
        lines.push(signed(&key(), &events, &[8]).remove(0));
        let tampered = lines[0].replace("\"count\":10", "\"count\":9");
        lines.push(tampered);
        let r = check(&k, &lines, &events);
        assert_eq!(kinds(&r), ["REFUSED", "REFUSED"], "{:?}", r.findings);
        assert!(r.findings[0].to_string().contains("line 2"));
        assert!(r.findings[1].to_string().contains("bad signature"));
        assert_eq!(r.checkpoints, 1);
    }

    #[test]
    fn event_times_read_back_to_their_milliseconds() {
        for (text, ms) in [
            ("1970-01-01T00:00:00.000Z", 0),
            ("2026-01-01T00:00:00.000Z", 1_767_225_600_000),
            ("2024-02-29T23:59:59.999Z", 1_709_251_199_999),
            ("2000-03-01T12:34:56.789Z", 951_914_096_789),
            ("2026-01-01T00:00:00Z", 1_767_225_600_000),
            ("2026-01-01T00:00:00.5Z", 1_767_225_600_500),
            ("2026-01-01T00:00:00.25Z", 1_767_225_600_250),
            ("2026-01-01T00:00:00.250000000Z", 1_767_225_600_250),
        ] {
            assert_eq!(millis_of(text), Some(ms), "{text}");
        }
        for bad in [
            "",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.0001Z",
            "2026-01-01T00:00:00.0000000001Z",
            "2026-01-01 00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-01-01T00:00:00.000+01:00",
            "2026-01-01T0a:00:00.000Z",
        ] {
            assert_eq!(millis_of(bad), None, "{bad}");
        }
    }
}
