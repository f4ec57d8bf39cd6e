//! `POST /graphql` (rule 27): the Verified Orchestration approval operations under their own
//! names and field names, so that an existing client switches by changing its URL.
//!
//! The schema is fixed and small, so it is executed directly rather than through a GraphQL
//! framework: [`parse`] reads the document, each root field is resolved by one engine call
//! (through the same path as the REST API), and the result is projected onto the selection
//! set. Field errors follow the specification (`data.<field>` is null and `errors` says why,
//! with `extensions.code`); a document that does not parse or asks for a field the schema
//! lacks gets 400 with `errors` only. Introspection is not offered.
//!
//! ```graphql
//! type Mutation {
//!   createApprovalRequest(request: ApprovalRequestInput!): ApprovalRequestCreated!
//!   updateApprovalRequest(id: ID!, input: UpdateApprovalRequestInput!): Boolean!
//!   cancelApprovalRequest(id: ID!): Boolean!
//! }
//! type Query {
//!   actionedApprovalData(id: ID!): ActionedApprovalData   # null while pending
//! }
//! ```

pub mod parse;

use std::collections::{BTreeMap, HashSet};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::{Actor, CallbackFormat, RequestState};
use proto::{CallbackBody, CreateRequestBody, GraphqlRequest};
use serde_json::{Map, Value, json};

use crate::{ApiError, AppState, Auth};
use parse::{Document, Field, OpKind, Sel, Val};

/// A GraphQL error: a message, the response path where it happened, and a code.
fn error(message: impl Into<String>, path: Option<&str>, code: &str) -> Value {
    let mut e = json!({ "message": message.into(), "extensions": { "code": code } });
    if let Some(p) = path {
        e["path"] = json!([p]);
    }
    e
}

/// A request-level failure: 400 (or 401) with `errors` and no `data`.
fn refuse(status: StatusCode, message: impl Into<String>, code: &str) -> Response {
    (
        status,
        Json(json!({ "errors": [error(message, None, code)] })),
    )
        .into_response()
}

/// The GraphQL code of an API error.
fn code_of(e: &ApiError) -> &'static str {
    match e.status {
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::CONFLICT => "CONFLICT",
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        s if s.is_client_error() => "BAD_USER_INPUT",
        _ => "INTERNAL_SERVER_ERROR",
    }
}

pub async fn handler(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
    headers: HeaderMap,
    body: Result<Json<GraphqlRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let actor = match auth {
        Ok(Auth(a)) => a,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, e.message, "UNAUTHENTICATED"),
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            let e = ApiError::from(e);
            return refuse(e.status, e.message, "BAD_REQUEST");
        }
    };
    let doc = match parse::parse(&req.query) {
        Ok(d) => d,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                e.to_string(),
                "GRAPHQL_PARSE_FAILED",
            );
        }
    };
    let exec = match Execution::prepare(&doc, req.operation_name.as_deref(), req.variables) {
        Ok(x) => x,
        Err(msg) => return refuse(StatusCode::BAD_REQUEST, msg, "GRAPHQL_VALIDATION_FAILED"),
    };
    let key = match crate::routes::idempotency_key(&headers) {
        Ok(k) => k,
        Err(e) => return refuse(e.status, e.message, "BAD_REQUEST"),
    };
    exec.run(&state, &actor, key).await
}

/// A chosen operation with its variables, checked against the schema.
struct Execution<'d> {
    doc: &'d Document,
    kind: OpKind,
    fields: Vec<Field>,
    vars: Map<String, Value>,
}

impl<'d> Execution<'d> {
    fn prepare(
        doc: &'d Document,
        name: Option<&str>,
        given: Option<Map<String, Value>>,
    ) -> Result<Execution<'d>, String> {
        let op = match name {
            Some(n) => doc
                .operations
                .iter()
                .find(|o| o.name.as_deref() == Some(n))
                .ok_or_else(|| format!("no operation named {n:?} in the document"))?,
            None if doc.operations.len() == 1 => &doc.operations[0],
            None if doc.operations.is_empty() => return Err("the document has no operation".into()),
            None => return Err("the document has several operations: give operationName".into()),
        };
        if op.kind == OpKind::Subscription {
            return Err("subscriptions are not supported".into());
        }
        let given = given.unwrap_or_default();
        let mut vars = Map::new();
        for v in &op.vars {
            let value = match (given.get(&v.name), &v.default) {
                (Some(x), _) => x.clone(),
                (None, Some(d)) => to_json(d, &Map::new())?,
                (None, None) => Value::Null,
            };
            if v.non_null && value.is_null() {
                return Err(format!("variable ${} is required", v.name));
            }
            vars.insert(v.name.clone(), value);
        }
        let mut exec = Execution {
            doc,
            kind: op.kind,
            fields: vec![],
            vars,
        };
        let root = if op.kind == OpKind::Query {
            "Query"
        } else {
            "Mutation"
        };
        exec.fields = exec.collect(&op.selection, root, &mut HashSet::new())?;
        let allowed: &[&str] = match op.kind {
            OpKind::Query => &["actionedApprovalData", "__typename"],
            _ => &[
                "createApprovalRequest",
                "updateApprovalRequest",
                "cancelApprovalRequest",
                "__typename",
            ],
        };
        for f in &exec.fields {
            if !allowed.contains(&f.name.as_str()) {
                return Err(format!("Cannot query field {:?} on type {root:?}", f.name));
            }
        }
        Ok(exec)
    }

    /// The fields a selection set asks for on an object of type `on`: fragments spread in,
    /// `@skip`/`@include` applied.
    fn collect(
        &self,
        sels: &[Sel],
        on: &str,
        visiting: &mut HashSet<String>,
    ) -> Result<Vec<Field>, String> {
        let mut out = vec![];
        for s in sels {
            match s {
                Sel::Field(f) => {
                    if self.included(&f.directives)? {
                        out.push(f.clone());
                    }
                }
                Sel::Spread { name, directives } => {
                    if !self.included(directives)? {
                        continue;
                    }
                    let frag = self
                        .doc
                        .fragments
                        .iter()
                        .find(|f| &f.name == name)
                        .ok_or_else(|| format!("unknown fragment {name:?}"))?;
                    if !visiting.insert(name.clone()) {
                        return Err(format!("fragment {name:?} spreads itself"));
                    }
                    if frag.on == on {
                        out.extend(self.collect(&frag.selection, on, visiting)?);
                    }
                    visiting.remove(name);
                }
                Sel::Inline {
                    on: cond,
                    directives,
                    selection,
                } => {
                    if self.included(directives)? && cond.as_deref().is_none_or(|c| c == on) {
                        out.extend(self.collect(selection, on, visiting)?);
                    }
                }
            }
        }
        Ok(out)
    }

    fn included(&self, directives: &[parse::Directive]) -> Result<bool, String> {
        for d in directives {
            let arg = d.args.iter().find(|(n, _)| n == "if").map(|(_, v)| v);
            let value = match arg {
                Some(v) => to_json(v, &self.vars)?,
                None => return Err(format!("@{} needs an if: argument", d.name)),
            };
            let Some(b) = value.as_bool() else {
                return Err(format!("@{}(if:) takes a Boolean", d.name));
            };
            match d.name.as_str() {
                "skip" if b => return Ok(false),
                "include" if !b => return Ok(false),
                "skip" | "include" => {}
                other => return Err(format!("unknown directive @{other}")),
            }
        }
        Ok(true)
    }

    fn args(&self, f: &Field) -> Result<Map<String, Value>, String> {
        let mut m = Map::new();
        for (name, v) in &f.args {
            m.insert(name.clone(), to_json(v, &self.vars)?);
        }
        Ok(m)
    }

    async fn run(self, state: &AppState, actor: &Actor, key: Option<String>) -> Response {
        let mut data = Map::new();
        let mut errors = vec![];
        // Mutations run one after the other, in document order, as the specification asks.
        for f in &self.fields {
            let result = match self.args(f) {
                Ok(args) => resolve(state, actor, self.kind, f, args, key.clone()).await,
                Err(msg) => Err(error(msg, Some(f.key()), "BAD_USER_INPUT")),
            };
            let value = result.and_then(|(v, ty)| {
                self.project(f, v, ty)
                    .map_err(|msg| error(msg, Some(f.key()), "GRAPHQL_VALIDATION_FAILED"))
            });
            match value {
                Ok(v) => {
                    data.insert(f.key().to_owned(), v);
                }
                Err(e) => {
                    data.insert(f.key().to_owned(), Value::Null);
                    errors.push(e);
                }
            }
        }
        let mut body = json!({ "data": data });
        if !errors.is_empty() {
            body["errors"] = Value::Array(errors);
        }
        Json(body).into_response()
    }

    /// Shapes a resolved value by the field's selection set. `ty` names its object type, or
    /// is empty for a scalar (JSON included).
    fn project(&self, f: &Field, v: Value, ty: &str) -> Result<Value, String> {
        if ty.is_empty() {
            if !f.selection.is_empty() {
                return Err(format!(
                    "field {:?} is a scalar and has no subfields",
                    f.name
                ));
            }
            return Ok(v);
        }
        let Value::Object(src) = v else {
            return Ok(Value::Null);
        };
        if f.selection.is_empty() {
            return Err(format!(
                "field {:?} of type {ty} must have a selection of subfields",
                f.name
            ));
        }
        let mut out = Map::new();
        for sub in self.collect(&f.selection, ty, &mut HashSet::new())? {
            let value = if sub.name == "__typename" {
                Value::String(ty.to_owned())
            } else {
                let Some(x) = src.get(&sub.name) else {
                    return Err(format!("Cannot query field {:?} on type {ty:?}", sub.name));
                };
                self.project(&sub, x.clone(), child_type(ty, &sub.name))?
            };
            out.insert(sub.key().to_owned(), value);
        }
        Ok(Value::Object(out))
    }
}

/// The object type of a field's value; "" for scalars.
fn child_type(parent: &str, field: &str) -> &'static str {
    match (parent, field) {
        ("ActionedApprovalData", "actionedBy") => "ActionedBy",
        _ => "",
    }
}

/// Turns a GraphQL value into JSON, substituting variables.
fn to_json(v: &Val, vars: &Map<String, Value>) -> Result<Value, String> {
    Ok(match v {
        Val::Var(n) => vars
            .get(n)
            .cloned()
            .ok_or_else(|| format!("variable ${n} is not defined by the operation"))?,
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Int(i) => json!(i),
        Val::Float(f) => json!(f),
        Val::Str(s) | Val::Enum(s) => Value::String(s.clone()),
        Val::List(items) => Value::Array(
            items
                .iter()
                .map(|x| to_json(x, vars))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(fields) => {
            let mut m = Map::new();
            for (k, x) in fields {
                m.insert(k.clone(), to_json(x, vars)?);
            }
            Value::Object(m)
        }
    })
}

/// Resolves one root field to its value and object type name.
async fn resolve(
    state: &AppState,
    actor: &Actor,
    kind: OpKind,
    f: &Field,
    args: Map<String, Value>,
    key: Option<String>,
) -> Result<(Value, &'static str), Value> {
    let path = Some(f.key());
    let api = |e: ApiError| error(e.message.clone(), path, code_of(&e));
    let bad = |m: String| error(m, path, "BAD_USER_INPUT");
    let id_arg = |args: &Map<String, Value>| -> Result<String, Value> {
        match args.get("id") {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(bad("argument id: ID! is required".into())),
        }
    };
    let typename = match kind {
        OpKind::Query => "Query",
        _ => "Mutation",
    };
    match f.name.as_str() {
        "__typename" => Ok((Value::String(typename.into()), "")),
        "createApprovalRequest" => {
            only_args(&args, &["request"]).map_err(bad)?;
            let input = args
                .get("request")
                .filter(|v| v.is_object())
                .ok_or_else(|| bad("argument request: ApprovalRequestInput! is required".into()))?;
            let body = approval_request(input).map_err(bad)?;
            let created = crate::routes::create(state, actor, body, key, CallbackFormat::Graphql)
                .await
                .map_err(api)?;
            let public_url = state.engine.config().server.public_url.clone();
            Ok((
                json!({
                    "id": created.request.id,
                    "portalUrl": crate::convert::portal_url(&public_url, &created.request.id),
                    "callbackSecret": created.callback_secret,
                }),
                "ApprovalRequestCreated",
            ))
        }
        "updateApprovalRequest" => {
            only_args(&args, &["id", "input"]).map_err(bad)?;
            let id = id_arg(&args)?;
            let input = args
                .get("input")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    bad("argument input: UpdateApprovalRequestInput! is required".into())
                })?;
            only_args(input, &["purpose", "reason"]).map_err(|m| bad(format!("input: {m}")))?;
            let text = |k: &str| -> Result<Option<String>, Value> {
                match input.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(bad(format!("input.{k} must be a String"))),
                }
            };
            let (purpose, reason) = (text("purpose")?, text("reason")?);
            state
                .engine
                .update_request(actor, &id, purpose, reason)
                .await
                .map_err(|e| api(e.into()))?;
            Ok((Value::Bool(true), ""))
        }
        "cancelApprovalRequest" => {
            only_args(&args, &["id"]).map_err(bad)?;
            let id = id_arg(&args)?;
            state
                .engine
                .cancel(actor, &id, None)
                .await
                .map_err(|e| api(e.into()))?;
            Ok((Value::Bool(true), ""))
        }
        "actionedApprovalData" => {
            only_args(&args, &["id"]).map_err(bad)?;
            let id = id_arg(&args)?;
            let r = state
                .engine
                .request(actor, &id)
                .await
                .map_err(|e| api(e.into()))?;
            if r.state == RequestState::Pending {
                return Ok((Value::Null, "ActionedApprovalData"));
            }
            Ok((
                engine::callback::outcome_body(&r, CallbackFormat::Graphql),
                "ActionedApprovalData",
            ))
        }
        other => Err(error(
            format!("Cannot query field {other:?} on type {typename:?}"),
            path,
            "GRAPHQL_VALIDATION_FAILED",
        )),
    }
}

/// Refuses arguments or input fields the schema does not define.
fn only_args(m: &Map<String, Value>, known: &[&str]) -> Result<(), String> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown argument or field {k:?}; known: {}",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// `ApprovalRequestInput` → the REST body: `requestType` is the resource, requested
/// credential types are groups (or `admin`) every reviewer must hold. `requester`, `reason`,
/// `duration` and `fields` are Countersign's additions.
fn approval_request(v: &Value) -> Result<CreateRequestBody, String> {
    let m = v.as_object().ok_or("request must be an object")?;
    only_args(
        m,
        &[
            "requestType",
            "purpose",
            "referenceUrl",
            "correlationId",
            "requestData",
            "callback",
            "presentationRequestInput",
            "requester",
            "reason",
            "duration",
            "fields",
        ],
    )?;
    let text = |k: &str| -> Result<Option<String>, String> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("request.{k} must be a String")),
        }
    };
    let resource = text("requestType")?.ok_or("request.requestType is required")?;
    let callback = match m.get("callback") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => {
            only_args(c, &["url"]).map_err(|e| format!("request.callback: {e}"))?;
            match c.get("url") {
                Some(Value::String(u)) => Some(CallbackBody { url: u.clone() }),
                _ => return Err("request.callback.url must be a String".into()),
            }
        }
        Some(_) => return Err("request.callback must be an object".into()),
    };
    let mut credentials = vec![];
    match m.get("presentationRequestInput") {
        None | Some(Value::Null) => {}
        Some(Value::Object(p)) => {
            only_args(p, &["requestedCredentials"])
                .map_err(|e| format!("request.presentationRequestInput: {e}"))?;
            let list = p
                .get("requestedCredentials")
                .and_then(Value::as_array)
                .ok_or("presentationRequestInput.requestedCredentials must be a list")?;
            for (i, c) in list.iter().enumerate() {
                let c = c
                    .as_object()
                    .ok_or(format!("requestedCredentials[{i}] must be an object"))?;
                only_args(c, &["type"]).map_err(|e| format!("requestedCredentials[{i}]: {e}"))?;
                match c.get("type") {
                    Some(Value::String(t)) => credentials.push(t.clone()),
                    _ => return Err(format!("requestedCredentials[{i}].type must be a String")),
                }
            }
        }
        Some(_) => return Err("request.presentationRequestInput must be an object".into()),
    }
    let fields: BTreeMap<String, Value> = match m.get("fields") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(f)) => f.clone().into_iter().collect(),
        Some(_) => return Err("request.fields must be an object".into()),
    };
    Ok(CreateRequestBody {
        resource,
        reason: text("reason")?.unwrap_or_default(),
        duration: text("duration")?,
        fields,
        start_at: None,
        purpose: text("purpose")?,
        reference_url: text("referenceUrl")?,
        correlation_id: text("correlationId")?,
        request_data: m.get("requestData").cloned().filter(|v| !v.is_null()),
        requester: text("requester")?,
        callback,
        reviewer_credentials: credentials,
    })
}
