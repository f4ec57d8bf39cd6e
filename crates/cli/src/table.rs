//! Plain-text tables for people; `--json` is for scripts.
//!
//! Every value that came from the server goes through [`printable`] before it is laid out, so
//! that text stored before the API refused control characters (or sent by a server we do not
//! trust) cannot move the cursor, draw a fake line or write the terminal's clipboard
//! (hardening item 6). `--json` needs no such care: JSON escapes control characters itself.

use std::borrow::Cow;
use std::fmt::Write;

use proto::{ExplainView, GrantView, RequestView, SimulationView};

/// The text with every character a terminal would not print as itself escaped: control
/// characters (newline and tab too, since a table row is one line) as `\n`, `\t`, `\r` or
/// `\u{1b}`, and the invisible format characters that reorder or hide text (bidirectional
/// overrides and isolates, zero-width characters, line and paragraph separators) as `\u{…}`.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether a character is not printed as itself: a C0 or C1 control or DEL, or a Unicode
/// format or separator character that changes how the text around it is shown.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}')
}

/// Lays out rows in columns separated by two spaces. Cells are made [`printable`] here.
pub(crate) fn columns(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == r.len() {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

pub fn requests(list: &[RequestView]) -> String {
    let mut rows = vec![
        vec![
            "ID",
            "RESOURCE",
            "REQUESTER",
            "STATE",
            "STEP",
            "DURATION",
            "CREATED",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>(),
    ];
    for r in list {
        rows.push(vec![
            r.id.clone(),
            r.resource.clone(),
            r.requester.clone(),
            r.state.clone(),
            r.current_step
                .map(|s| format!("{s}/{}", r.steps.len()))
                .unwrap_or_else(|| "-".into()),
            r.duration.clone(),
            r.created_at.clone(),
        ]);
    }
    columns(&rows)
}

/// `writeln!` with every argument made [`printable`] first, so that no value can start a line
/// of its own or reach the terminal as an escape sequence.
macro_rules! line {
    ($out:expr, $fmt:literal $(, $arg:expr)* $(,)?) => {
        let _ = writeln!($out, $fmt $(, printable(&($arg).to_string()))*);
    };
}

pub fn request(r: &RequestView) -> String {
    let mut out = String::new();
    line!(out, "request   {}", r.id);
    line!(out, "resource  {}", r.resource);
    line!(out, "requester {}", r.requester);
    line!(out, "state     {}", r.state);
    if !r.summary.status.is_empty() {
        line!(out, "status    {}", r.summary.status);
    }
    match &r.action {
        Some(a) => {
            line!(out, "action    {}", a.tool);
            for l in a.arguments_text().lines() {
                line!(out, "          {}", l);
            }
            line!(out, "digest    {}", a.digest);
            match (&a.claimed_at, &a.claim_until) {
                (Some(at), _) => {
                    line!(out, "claimed   {}", at);
                }
                (None, Some(until)) => {
                    line!(out, "claim by  {}", until);
                }
                (None, None) => {
                    line!(out, "claim     within {} of approval", a.claim_within);
                }
            }
        }
        None => {
            line!(out, "duration  {}", r.duration);
        }
    }
    line!(out, "reason    {}", r.reason);
    line!(out, "portal    {}", r.portal_url);
    if let Some(secret) = &r.callback_secret {
        line!(
            out,
            "callback secret {}  (shown once: keep it to verify callbacks)",
            secret
        );
    }
    for w in &r.warnings {
        line!(out, "warning   {}", w);
    }
    for (k, v) in &r.fields {
        let v = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        line!(out, "field     {} = {}", k, v);
    }
    for (i, s) in r.steps.iter().enumerate() {
        // The rule in the server's words (`proto::SummaryView::steps`).
        let rule = r
            .summary
            .steps
            .get(i)
            .map(String::as_str)
            .unwrap_or_default();
        line!(out, "step {}    {}: {}", s.index, s.status, rule);
        if !s.eligible.is_empty() {
            line!(out, "          awaiting: {}", s.eligible.join(", "));
        }
        if let Some(why) = &s.skipped_because {
            line!(out, "          skipped: {}", why);
        }
        for rv in &s.reviews {
            let mut review = format!("{} by {}", rv.decision, rv.by);
            if let Some(d) = &rv.duration {
                let _ = write!(review, " for {d}");
            }
            if rv.scope == "workflow" {
                review.push_str(" (entire workflow)");
            }
            if let Some(c) = &rv.comment {
                let _ = write!(review, ": {c}");
            }
            line!(out, "          {}", review);
        }
    }
    if let Some(f) = &r.follow_up {
        let status = match (&f.closed_by, &f.escalated_at) {
            (Some(by), _) => format!("{} by {by}", f.state),
            (None, Some(at)) => format!("open, overdue (escalated {at})"),
            (None, None) => format!("open, due by {}", f.due_at),
        };
        line!(out, "follow-up {} [{}]", status, f.reviewers.join(", "));
        if !f.eligible.is_empty() {
            line!(out, "          awaiting: {}", f.eligible.join(", "));
        }
        if let Some(c) = &f.comment {
            line!(out, "          {}", c);
        }
    }
    for c in &r.comments {
        line!(out, "comment   {} {}: {}", c.at, c.by, c.text);
    }
    // Who decided and why is in the status line (the server's sentence); when, here.
    if let Some(o) = &r.outcome {
        line!(out, "decided   {}", o.actioned_at);
    }
    if let Some(g) = &r.grant {
        line!(
            out,
            "grant     {} {} until {}",
            g.id,
            g.state,
            g.expires_at.as_deref().unwrap_or("-")
        );
    } else if let Some(id) = &r.grant_id {
        line!(out, "grant     {}", id);
    }
    out
}

/// The line under a page of a list that has more: how to ask for the next page.
pub fn more(next_cursor: Option<&str>) -> String {
    match next_cursor {
        Some(c) => format!("more: repeat with --cursor {}\n", printable(c)),
        None => String::new(),
    }
}

pub fn grants(list: &[GrantView]) -> String {
    let mut rows = vec![
        vec!["ID", "SUBJECT", "RESOURCE", "STATE", "EXPIRES", "ERROR"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
    ];
    for g in list {
        let resource = match &g.workflow {
            Some(w) => format!("{} (workflow {w})", g.resource),
            None => g.resource.clone(),
        };
        rows.push(vec![
            g.id.clone(),
            g.subject.clone(),
            resource,
            g.state.clone(),
            g.expires_at.clone().unwrap_or_else(|| "-".into()),
            g.last_error.clone().unwrap_or_default(),
        ]);
    }
    columns(&rows)
}

/// `countersign explain`: the decision trace, one sentence per line.
pub fn explanation(e: &ExplainView) -> String {
    let mut out = String::new();
    line!(
        out,
        "request   {} ({} for {})",
        e.request,
        e.resource,
        e.requester
    );
    line!(out, "state     {}", e.state);
    for w in &e.warnings {
        line!(out, "warning   {}", w);
    }
    for l in &e.lines {
        line!(out, "  {}", l);
    }
    out
}

/// `countersign simulate`: what would happen, one sentence per line.
pub fn simulation(s: &SimulationView) -> String {
    let mut out = String::new();
    line!(out, "resource  {} for {}", s.resource, s.requester);
    line!(out, "outcome   {}", s.outcome);
    for d in &s.deny {
        line!(out, "deny      {}", d);
    }
    for w in &s.warnings {
        line!(out, "warning   {}", w);
    }
    for l in &s.lines {
        line!(out, "  {}", l);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request whose text carries what an attacker would send: an ANSI sequence that clears
    /// the line and writes a fake state, a newline that starts a fake line, an OSC 52
    /// clipboard write, a C1 CSI and a right-to-left override.
    fn hostile() -> RequestView {
        serde_json::from_value(serde_json::json!({
            "id": "r1", "resource": "db", "requester": "grace@example.com",
            "reason": "fix\u{1b}[2K\rstate     approved",
            "fields": {"ticket": "INC-1\nstate     approved", "n": 3},
            "duration": "1h", "state": "pending",
            "created_at": "2026-01-01T00:00:00Z", "pending_until": "2026-01-02T00:00:00Z",
            "steps": [{
                "index": 1, "constraint": "one_of", "status": "active",
                "reviewers": ["alice@example.com"], "eligible": ["alice@example.com"],
                "reviews": [{"by": "alice@example.com", "decision": "deny",
                    "comment": "\u{1b}]52;c;Y3VybCBldmls\u{7}", "scope": "resource",
                    "at": "2026-01-01T00:00:01Z"}]
            }],
            "comments": [{"by": "bob@example.com", "text": "a\u{9b}2Jb\u{202e}gnp.exe", "at": "t"}],
            "portal_url": "http://localhost/requests/r1"
        }))
        .unwrap()
    }

    #[test]
    fn hardening_6_request_table_escapes_control_and_format_characters() {
        let out = request(&hostile());
        assert!(
            !out.chars().any(|c| c != '\n' && hidden(c)),
            "raw control character in {out:?}"
        );
        assert_eq!(
            out.lines().filter(|l| l.starts_with("state")).count(),
            1,
            "{out}"
        );
        assert!(
            out.contains(r"reason    fix\u{1b}[2K\rstate     approved"),
            "{out}"
        );
        assert!(
            out.contains(r"field     ticket = INC-1\nstate     approved"),
            "{out}"
        );
        assert!(out.contains(r"field     n = 3"), "{out}");
        assert!(
            out.contains(r"deny by alice@example.com: \u{1b}]52;c;Y3VybCBldmls\u{7}"),
            "{out}"
        );
        assert!(out.contains(r"a\u{9b}2Jb\u{202e}gnp.exe"), "{out}");
    }

    #[test]
    fn hardening_6_list_table_escapes_cells_and_keeps_columns() {
        let mut r = hostile();
        r.requester = "x\ty".into();
        let out = requests(&[r]);
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.contains(r"x\ty"), "{out}");
        assert!(!out.chars().any(|c| c != '\n' && hidden(c)), "{out:?}");
    }

    #[test]
    fn hardening_6_printable_leaves_ordinary_text_alone() {
        assert!(matches!(
            printable("café ✓ 日本 \"q\" \\"),
            Cow::Borrowed(_)
        ));
        assert_eq!(printable("a\u{0}b\u{7f}"), r"a\u{0}b\u{7f}");
    }
}
