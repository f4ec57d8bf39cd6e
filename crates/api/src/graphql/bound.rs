//! Bounds checked before async-graphql sees a document, so that a small document cannot make
//! parsing or validation expensive.
//!
//! async-graphql's validation visits a fragment's selection again at every spread, so a
//! document of a few hundred bytes whose fragments each spread the next one twice asks it to
//! visit 2^25 fields. [`parse`] counts the fields a document selects with every fragment
//! spread, but counts each fragment once (memoised), so the count costs the size of the
//! document and the document is refused before anything expands it. Nesting is bounded first
//! on the text, because the parser is recursive.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// The deepest a document may nest braces, brackets and parentheses, and selections (a
/// fragment spread counting as a level, as async-graphql's recursive depth does).
pub const MAX_NESTING: usize = 32;
/// The most fields a document may write, fragments included.
pub const MAX_WRITTEN: usize = 1000;
/// The most fields one operation may select once its fragments are spread.
pub const MAX_SELECTED: usize = 500;

#[derive(Debug, PartialEq)]
pub enum Refused {
    /// The document is not GraphQL.
    Parse(String),
    /// The document is over a limit.
    Limit(String),
}

/// Parses a document within the bounds.
pub fn parse(query: &str) -> Result<ExecutableDocument, Refused> {
    nesting(query)?;
    let doc =
        async_graphql::parser::parse_query(query).map_err(|e| Refused::Parse(e.to_string()))?;
    let mut count = Count {
        doc: &doc,
        memo: HashMap::new(),
        visiting: HashSet::new(),
        written: 0,
    };
    for (_, fragment) in doc.fragments.iter() {
        count.written(&fragment.node.selection_set.node)?;
    }
    for (_, op) in doc.operations.iter() {
        count.written(&op.node.selection_set.node)?;
    }
    for (name, op) in doc.operations.iter() {
        let selected = count.selected(&op.node.selection_set.node, 1)?;
        if selected > MAX_SELECTED {
            let name = name.map(|n| format!(" {n}")).unwrap_or_default();
            return Err(Refused::Limit(format!(
                "operation{name} selects more than {MAX_SELECTED} fields once its fragments are spread"
            )));
        }
    }
    Ok(doc)
}

/// Names the first required variable (non-null, without a default) of the operation that
/// will run that `variables` leaves out or sets to null. async-graphql would refuse it only
/// when the field that uses it runs, after the mutations before it; it is a request error.
pub fn missing_variable(
    doc: &ExecutableDocument,
    operation: Option<&str>,
    variables: &serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    let op = doc
        .operations
        .iter()
        .find(|(name, _)| operation.is_none() || name.map(|n| n.as_str()) == operation)?
        .1;
    op.node.variable_definitions.iter().find_map(|v| {
        let v = &v.node;
        let required = !v.var_type.node.nullable && v.default_value.is_none();
        let given = variables
            .get(v.name.node.as_str())
            .is_some_and(|x| !x.is_null());
        (required && !given).then(|| {
            format!(
                "variable ${} of required type {} was not provided",
                v.name.node, v.var_type.node
            )
        })
    })
}

/// Refuses text nested deeper than [`MAX_NESTING`], skipping strings and comments.
fn nesting(query: &str) -> Result<(), Refused> {
    let b = query.as_bytes();
    let (mut i, mut depth) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    // An escaped triple quote does not end a block string.
                    i += if b[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Refused::Limit(format!(
                        "the document nests deeper than {MAX_NESTING} levels"
                    )));
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

struct Count<'d> {
    doc: &'d ExecutableDocument,
    /// Fields each fragment selects, spreads included.
    memo: HashMap<&'d str, usize>,
    visiting: HashSet<&'d str>,
    written: usize,
}

impl<'d> Count<'d> {
    /// Adds the fields written in a selection set (spreads not followed).
    fn written(&mut self, set: &'d SelectionSet) -> Result<(), Refused> {
        for s in &set.items {
            match &s.node {
                Selection::Field(f) => {
                    self.written += 1;
                    if self.written > MAX_WRITTEN {
                        return Err(Refused::Limit(format!(
                            "the document writes more than {MAX_WRITTEN} fields"
                        )));
                    }
                    self.written(&f.node.selection_set.node)?;
                }
                Selection::InlineFragment(i) => self.written(&i.node.selection_set.node)?,
                Selection::FragmentSpread(_) => {}
            }
        }
        Ok(())
    }

    /// The fields a selection set selects once spread, at `level` of nesting; stops as soon as
    /// the count passes [`MAX_SELECTED`].
    fn selected(&mut self, set: &'d SelectionSet, level: usize) -> Result<usize, Refused> {
        if level > MAX_NESTING {
            return Err(Refused::Limit(format!(
                "selections nest deeper than {MAX_NESTING} levels once fragments are spread"
            )));
        }
        let mut n = 0usize;
        for s in &set.items {
            n = n.saturating_add(match &s.node {
                Selection::Field(f) => 1 + self.selected(&f.node.selection_set.node, level + 1)?,
                Selection::InlineFragment(i) => {
                    self.selected(&i.node.selection_set.node, level + 1)?
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(spread.node.fragment_name.node.as_str(), level + 1)?
                }
            });
            if n > MAX_SELECTED {
                break;
            }
        }
        Ok(n)
    }

    fn fragment(&mut self, name: &'d str, level: usize) -> Result<usize, Refused> {
        if let Some(&n) = self.memo.get(name) {
            return Ok(n);
        }
        // An unknown fragment selects nothing here; validation names it.
        let Some(fragment) = self.doc.fragments.get(name) else {
            return Ok(0);
        };
        if !self.visiting.insert(name) {
            return Err(Refused::Limit(format!("fragment {name} spreads itself")));
        }
        let n = self.selected(&fragment.node.selection_set.node, level)?;
        self.visiting.remove(name);
        self.memo.insert(name, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit's document: 25 fragments, each spreading the next one twice.
    pub fn fan_out(leaf: &str) -> String {
        let mut q = String::from("query { ...F0 }\n");
        for i in 0..25 {
            q.push_str(&format!(
                "fragment F{i} on Query {{ ...F{} ...F{} }}\n",
                i + 1,
                i + 1
            ));
        }
        q.push_str(&format!("fragment F25 on Query {{ {leaf} }}\n"));
        q
    }

    fn limit(q: &str) -> String {
        match parse(q) {
            Err(Refused::Limit(m)) => m,
            other => panic!("expected a limit, got {other:?}"),
        }
    }

    #[test]
    fn hardening_1_fragment_fan_out_is_counted_without_spreading() {
        let m = limit(&fan_out("__typename"));
        assert!(m.contains("fragments are spread"), "{m}");
        assert!(m.contains("more than 500 fields"), "{m}");
    }

    #[test]
    fn hardening_1_a_fragment_cycle_is_refused() {
        let m = limit("query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }");
        assert_eq!(m, "fragment A spreads itself");
    }

    #[test]
    fn hardening_1_nesting_is_bounded_on_the_text_and_strings_do_not_count() {
        let deep = format!("query {}{}", "{ a ".repeat(40), "}".repeat(40));
        assert!(limit(&deep).contains("nests deeper than 32"));
        let in_string = format!(
            "query {{ actionedApprovalData(id: \"{}\") {{ status }} }} # {}",
            "{".repeat(100),
            "[".repeat(100)
        );
        assert!(parse(&in_string).is_ok());
        let block = format!("query {{ a(x: \"\"\"{}\\\"\"\"\"\"\") }}", "(".repeat(100));
        assert!(parse(&block).is_ok());
    }

    #[test]
    fn hardening_1_too_many_written_fields_are_refused() {
        let q = format!("query {{ {} }}", "a: __typename ".repeat(1001));
        assert!(limit(&q).contains("more than 1000 fields"));
        let ok = format!("query {{ {} }}", "a: __typename ".repeat(400));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn hardening_1_a_syntax_error_is_a_parse_error() {
        assert!(matches!(
            parse("query { actionedApprovalData(id: ) }"),
            Err(Refused::Parse(_))
        ));
    }
}
