//! Plain-text tables for people; `--json` is for scripts.

use std::fmt::Write;

use proto::{ExplainView, GrantView, RequestView, SimulationView};

/// Lays out rows in columns separated by two spaces.
fn columns(rows: &[Vec<String>]) -> String {
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
    for r in rows {
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

pub fn request(r: &RequestView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "request   {}", r.id);
    let _ = writeln!(out, "resource  {}", r.resource);
    let _ = writeln!(out, "requester {}", r.requester);
    let _ = writeln!(out, "state     {}", r.state);
    let _ = writeln!(out, "duration  {}", r.duration);
    let _ = writeln!(out, "reason    {}", r.reason);
    let _ = writeln!(out, "portal    {}", r.portal_url);
    if let Some(secret) = &r.callback_secret {
        let _ = writeln!(
            out,
            "callback secret {secret}  (shown once: keep it to verify callbacks)"
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning   {w}");
    }
    for (k, v) in &r.fields {
        let v = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = writeln!(out, "field     {k} = {v}");
    }
    for s in &r.steps {
        let rule = match s.min {
            Some(m) => format!("quorum {m} of"),
            None => s.constraint.replace('_', " "),
        };
        let _ = writeln!(
            out,
            "step {}    {} [{}] {}",
            s.index,
            s.status,
            rule,
            s.reviewers.join(", ")
        );
        if !s.eligible.is_empty() {
            let _ = writeln!(out, "          awaiting: {}", s.eligible.join(", "));
        }
        if let Some(why) = &s.skipped_because {
            let _ = writeln!(out, "          skipped: {why}");
        }
        for rv in &s.reviews {
            let mut line = format!("          {} by {}", rv.decision, rv.by);
            if let Some(d) = &rv.duration {
                let _ = write!(line, " for {d}");
            }
            if rv.scope == "workflow" {
                line.push_str(" (entire workflow)");
            }
            if let Some(c) = &rv.comment {
                let _ = write!(line, ": {c}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    for c in &r.comments {
        let _ = writeln!(out, "comment   {} {}: {}", c.at, c.by, c.text);
    }
    if let Some(o) = &r.outcome {
        let by = match (&o.actioned_by, &o.policy) {
            (Some(a), _) => a.id.clone(),
            (None, Some(q)) => format!("policy {q}"),
            (None, None) => "countersign".to_owned(),
        };
        let _ = writeln!(out, "outcome   {} by {by} at {}", o.status, o.actioned_at);
    }
    if let Some(g) = &r.grant {
        let _ = writeln!(
            out,
            "grant     {} {} until {}",
            g.id,
            g.state,
            g.expires_at.as_deref().unwrap_or("-")
        );
    } else if let Some(id) = &r.grant_id {
        let _ = writeln!(out, "grant     {id}");
    }
    out
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
    let _ = writeln!(
        out,
        "request   {} ({} for {})",
        e.request, e.resource, e.requester
    );
    let _ = writeln!(out, "state     {}", e.state);
    for w in &e.warnings {
        let _ = writeln!(out, "warning   {w}");
    }
    for l in &e.lines {
        let _ = writeln!(out, "  {l}");
    }
    out
}

/// `countersign simulate`: what would happen, one sentence per line.
pub fn simulation(s: &SimulationView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "resource  {} for {}", s.resource, s.requester);
    let _ = writeln!(out, "outcome   {}", s.outcome);
    for d in &s.deny {
        let _ = writeln!(out, "deny      {d}");
    }
    for w in &s.warnings {
        let _ = writeln!(out, "warning   {w}");
    }
    for l in &s.lines {
        let _ = writeln!(out, "  {l}");
    }
    out
}
