//! Dynamic field options (Sym's prefetch): a string field may declare `options_from`, and its
//! choices are fetched from that URL, server-side, through the guard against server-side
//! request forgery (rule 26), with a time limit and a short cache.
//!
//! The same list serves the request form, `GET /v1/resources/{name}/fields/{field}/options`,
//! and the check at creation: a value for such a field must be one of the options. The answer
//! may be an array of strings or numbers, or of objects whose `value` and `label` keys the
//! configuration names, found at a JSON pointer (`items`).
//!
//! This module does not retry: a failed fetch is reported to the caller (502), and the next
//! caller tries again. A failure is not cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use config::OptionsSource;
use domain::Timestamp;
use serde_json::Value;

use crate::outbound::{Guard, shown};

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read, in bytes.
const MAX_ANSWER: usize = 1024 * 1024;
/// The most options kept from one answer.
pub const MAX_OPTIONS: usize = 1000;

/// One choice of a dynamic field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldOption {
    pub value: String,
    pub label: String,
}

/// Answers kept per source (its URL, headers and how items are read), with when they were
/// fetched.
#[derive(Default)]
pub(crate) struct Cache {
    entries: Mutex<HashMap<String, (Timestamp, Vec<FieldOption>)>>,
}

impl Cache {
    fn get(&self, key: &str, now: Timestamp, ttl_ms: i64) -> Option<Vec<FieldOption>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (at, options) = entries.get(key)?;
        (now.millis() - at.millis() < ttl_ms && now >= *at).then(|| options.clone())
    }

    fn put(&self, key: &str, now: Timestamp, options: Vec<FieldOption>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Sources are few (one per configured field), but reloads may leave old ones
        // behind: bound the map.
        if entries.len() > 256 {
            entries.clear();
        }
        entries.insert(key.to_owned(), (now, options));
    }
}

/// The options of `source`, from the cache or fetched now.
pub(crate) async fn options(
    cache: &Cache,
    guard: &Guard,
    source: &OptionsSource,
    now: Timestamp,
) -> Result<Vec<FieldOption>, String> {
    let ttl_ms = i64::try_from(source.cache.secs())
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    // Two fields may read the same URL differently, or with other headers.
    let key = format!(
        "{}\n{}\n{}\n{:?}\n{:?}",
        source.url, source.items, source.value, source.label, source.headers
    );
    if ttl_ms > 0
        && let Some(hit) = cache.get(&key, now, ttl_ms)
    {
        return Ok(hit);
    }
    let fetched = fetch(guard, source).await?;
    if ttl_ms > 0 {
        cache.put(&key, now, fetched.clone());
    }
    Ok(fetched)
}

async fn fetch(guard: &Guard, source: &OptionsSource) -> Result<Vec<FieldOption>, String> {
    let url = &source.url;
    guard.check_literal(url)?;
    let client = guard.client(FETCH_TIMEOUT)?;
    let mut req = client.get(url).header("accept", "application/json");
    for (k, v) in &source.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let mut res = req.send().await.map_err(|e| {
        // reqwest's message names the URL with its query; say only where it went.
        let why = if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            "could not connect (or the address is refused)".to_owned()
        } else {
            "failed".to_owned()
        };
        format!("fetching options from {} {why}", shown(url))
    })?;
    let status = res.status();
    if !status.is_success() {
        return Err(format!(
            "{} answered {} to the options fetch",
            shown(url),
            status.as_u16()
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|_| format!("reading the options from {} failed", shown(url)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!(
                "the options from {} are larger than {MAX_ANSWER} bytes",
                shown(url)
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the options from {} are not JSON: {e}", shown(url)))?;
    read(&doc, source).map_err(|e| format!("the options from {}: {e}", shown(url)))
}

/// Reads the options out of an answer.
pub(crate) fn read(doc: &Value, source: &OptionsSource) -> Result<Vec<FieldOption>, String> {
    let items = if source.items.is_empty() {
        doc
    } else {
        doc.pointer(&source.items)
            .ok_or_else(|| format!("nothing at {}", source.items))?
    };
    let items = items
        .as_array()
        .ok_or_else(|| "the items are not an array".to_owned())?;
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().take(MAX_OPTIONS).enumerate() {
        let (value, label) = match item {
            Value::Object(o) => {
                let value = o.get(&source.value).and_then(scalar).ok_or_else(|| {
                    format!("item {i} has no {:?} string or number", source.value)
                })?;
                let label = source
                    .label
                    .as_ref()
                    .and_then(|k| o.get(k))
                    .and_then(scalar)
                    .unwrap_or_else(|| value.clone());
                (value, label)
            }
            other => {
                let v = scalar(other).ok_or_else(|| format!("item {i} is not a value"))?;
                (v.clone(), v)
            }
        };
        // The same rule a submitted value meets, so that no option offered can be refused.
        domain::limits::text(
            &format!("item {i}"),
            &value,
            domain::limits::MAX_FIELD_VALUE,
        )?;
        out.push(FieldOption { value, label });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(items: &str, value: &str, label: Option<&str>) -> OptionsSource {
        OptionsSource {
            url: "https://options.example/x".into(),
            items: items.into(),
            value: value.into(),
            label: label.map(str::to_owned),
            headers: Default::default(),
            cache: domain::Span::from_secs(60),
        }
    }

    #[test]
    fn answers_of_every_documented_shape_are_read() {
        let doc = serde_json::json!({"results": [{"name": "pikachu", "id": 25}, {"name": "eevee", "id": 133}]});
        let got = read(&doc, &source("/results", "id", Some("name"))).expect("read");
        assert_eq!(
            got,
            vec![
                FieldOption {
                    value: "25".into(),
                    label: "pikachu".into()
                },
                FieldOption {
                    value: "133".into(),
                    label: "eevee".into()
                },
            ]
        );
        let plain = serde_json::json!(["a", 2]);
        let got = read(&plain, &source("", "value", None)).expect("read");
        assert_eq!(got[1].value, "2");
        assert_eq!(got[1].label, "2");
    }

    #[test]
    fn answers_of_the_wrong_shape_are_refused_with_a_reason() {
        let doc = serde_json::json!({"results": {"a": 1}});
        assert_eq!(
            read(&doc, &source("/results", "value", None)).unwrap_err(),
            "the items are not an array"
        );
        assert_eq!(
            read(&doc, &source("/nope", "value", None)).unwrap_err(),
            "nothing at /nope"
        );
        let doc = serde_json::json!([{"name": "x"}]);
        assert!(
            read(&doc, &source("", "value", None))
                .unwrap_err()
                .contains("item 0 has no \"value\"")
        );
    }
}
