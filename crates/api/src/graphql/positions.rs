//! The specification's "All Variable Usages Are Allowed" rule (5.8.5), checked before
//! execution.
//!
//! async-graphql 7.2 has the rule, but its visitor chain never hands it the places where
//! variables are used, so a `String!` or an `Int!` variable passes where an `ID!` goes. This
//! module checks it from the schema's own SDL: the type of every argument and input field, and
//! of every field (to follow selections down), read once when the router is built.

use std::collections::{HashMap, HashSet};

use async_graphql::Positioned;
use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationType, Selection, SelectionSet, Type, TypeKind,
    TypeSystemDefinition, VariableDefinition,
};
use async_graphql_value::Value;

/// The input positions of a schema.
#[derive(Debug, Default)]
pub struct Positions {
    /// (object type, field) → the field's arguments and the named type of its value.
    fields: HashMap<(String, String), (HashMap<String, Type>, String)>,
    /// Input object type → its fields.
    inputs: HashMap<String, HashMap<String, Type>>,
    query: String,
    mutation: String,
}

impl Positions {
    /// Reads the positions from the schema's SDL (as `Schema::sdl` writes it).
    pub fn from_sdl(sdl: &str) -> Positions {
        let mut p = Positions {
            query: "Query".into(),
            mutation: "Mutation".into(),
            ..Positions::default()
        };
        let Ok(doc) = async_graphql::parser::parse_schema(sdl) else {
            return p;
        };
        for def in doc.definitions {
            let TypeSystemDefinition::Type(t) = def else {
                continue;
            };
            let name = t.node.name.node.to_string();
            match t.node.kind {
                TypeKind::Object(o) => {
                    for f in o.fields {
                        let args = f
                            .node
                            .arguments
                            .iter()
                            .map(|a| (a.node.name.node.to_string(), a.node.ty.node.clone()))
                            .collect();
                        let ty = named(&f.node.ty.node).to_owned();
                        p.fields
                            .insert((name.clone(), f.node.name.node.to_string()), (args, ty));
                    }
                }
                TypeKind::InputObject(i) => {
                    let fields = i
                        .fields
                        .iter()
                        .map(|f| (f.node.name.node.to_string(), f.node.ty.node.clone()))
                        .collect();
                    p.inputs.insert(name, fields);
                }
                _ => {}
            }
        }
        p
    }

    /// The first variable of any operation used where its type is not allowed, as an error
    /// message.
    pub fn check(&self, doc: &ExecutableDocument) -> Option<String> {
        for (_, op) in doc.operations.iter() {
            let root = match op.node.ty {
                OperationType::Query => &self.query,
                OperationType::Mutation => &self.mutation,
                OperationType::Subscription => continue,
            };
            let mut walk = Walk {
                positions: self,
                doc,
                defs: &op.node.variable_definitions,
                seen: HashSet::new(),
            };
            if let Some(e) = walk.set(&op.node.selection_set.node, root) {
                return Some(e);
            }
        }
        None
    }
}

/// The named type at the bottom of a type.
fn named(t: &Type) -> &str {
    match &t.base {
        BaseType::Named(n) => n.as_str(),
        BaseType::List(inner) => named(inner),
    }
}

/// Whether a variable of type `var` may stand where `expected` goes.
fn allowed(var: &Type, expected: &Type) -> bool {
    if !expected.nullable && var.nullable {
        return false;
    }
    match (&var.base, &expected.base) {
        (BaseType::Named(a), BaseType::Named(b)) => a == b,
        (BaseType::List(a), BaseType::List(b)) => allowed(a, b),
        _ => false,
    }
}

struct Walk<'a> {
    positions: &'a Positions,
    doc: &'a ExecutableDocument,
    defs: &'a [Positioned<VariableDefinition>],
    /// Fragments already walked for this operation.
    seen: HashSet<&'a str>,
}

impl<'a> Walk<'a> {
    fn set(&mut self, set: &'a SelectionSet, parent: &str) -> Option<String> {
        for s in &set.items {
            let found = match &s.node {
                Selection::Field(f) => {
                    let key = (parent.to_owned(), f.node.name.node.to_string());
                    // Fields the SDL does not list (introspection, or unknown fields, which
                    // validation names) have nothing to check here.
                    let Some((args, ty)) = self.positions.fields.get(&key) else {
                        continue;
                    };
                    f.node
                        .arguments
                        .iter()
                        .find_map(|(name, value)| {
                            let expected = args.get(name.node.as_str())?;
                            self.value(&value.node, expected)
                        })
                        .or_else(|| self.set(&f.node.selection_set.node, ty))
                }
                Selection::InlineFragment(i) => {
                    let on = i
                        .node
                        .type_condition
                        .as_ref()
                        .map_or(parent, |c| c.node.on.node.as_str());
                    self.set(&i.node.selection_set.node, on)
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    match self.doc.fragments.get(name) {
                        Some(frag) if self.seen.insert(name) => {
                            let on = frag.node.type_condition.node.on.node.as_str();
                            self.set(&frag.node.selection_set.node, on)
                        }
                        _ => None,
                    }
                }
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    fn value(&self, value: &Value, expected: &Type) -> Option<String> {
        match value {
            Value::Variable(name) => {
                let def = self.defs.iter().find(|d| d.node.name.node == *name)?;
                let mut var = def.node.var_type.node.clone();
                // A variable with a default value is never null.
                if def.node.default_value.is_some() {
                    var.nullable = false;
                }
                (!allowed(&var, expected)).then(|| {
                    format!(
                        "Variable \"${name}\" of type \"{}\" used in position expecting type \"{expected}\"",
                        def.node.var_type.node
                    )
                })
            }
            Value::List(items) => match &expected.base {
                BaseType::List(inner) => items.iter().find_map(|x| self.value(x, inner)),
                BaseType::Named(_) => items.iter().find_map(|x| self.value(x, expected)),
            },
            Value::Object(fields) => {
                let input = self.positions.inputs.get(named(expected))?;
                fields.iter().find_map(|(k, v)| {
                    let ty = input.get(k.as_str())?;
                    self.value(v, ty)
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(q: &str) -> Option<String> {
        let p = Positions::from_sdl(&super::super::schema().sdl());
        let doc = async_graphql::parser::parse_query(q).expect("parses");
        p.check(&doc)
    }

    #[test]
    fn hardening_1_variables_must_fit_where_they_are_used() {
        let refused = [
            "query Q($id: String!) { actionedApprovalData(id: $id) { status } }",
            "query Q($id: Int!) { actionedApprovalData(id: $id) { status } }",
            "query Q($id: ID) { actionedApprovalData(id: $id) { status } }",
            "mutation M($t: ID!) { createApprovalRequest(request: {requestType: $t}) { id } }",
            "mutation M($c: [String!]!) { createApprovalRequest(request: {requestType: \"r\", presentationRequestInput: {requestedCredentials: $c}}) { id } }",
            "query Q($id: String!) { ...F } fragment F on Query { actionedApprovalData(id: $id) { status } }",
        ];
        for q in refused {
            let e = check(q).unwrap_or_else(|| panic!("accepted: {q}"));
            assert!(e.contains("used in position expecting type"), "{e}");
        }
        let accepted = [
            "query Q($id: ID!) { actionedApprovalData(id: $id) { status } }",
            "query Q($id: ID = \"x\") { actionedApprovalData(id: $id) { status } }",
            "mutation M($r: ApprovalRequestInput!) { createApprovalRequest(request: $r) { id } }",
            "mutation M($t: String!, $p: String) { createApprovalRequest(request: {requestType: $t, purpose: $p}) { id } }",
            "{ __schema { types { name } } }",
        ];
        for q in accepted {
            assert_eq!(check(q), None, "{q}");
        }
    }
}
