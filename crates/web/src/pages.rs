//! The portal's pages and form handlers.
//!
//! A GET renders a page for the signed-in viewer (or sends them to sign in). A POST has
//! already passed the CSRF check in [`crate::guard_forms`]; it calls one engine service as
//! the viewer and answers `303 See Other` to the page it came from with a notice, or renders
//! that page again with the engine's refusal (a stale page, say) and the matching status.

use std::collections::BTreeMap;

use askama::Template;
use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use domain::{
    Decision, DomainError, FieldType, GrantState, Input, Principal, Request, RequestState,
    ReviewInput, Scope, Span,
};
use engine::{CreateRequest, EngineError, GrantQuery, RequestQuery};
use serde::Deserialize;

use crate::Portal;
use crate::markdown;
use crate::session::{self, Current, PendingLogin, SessionData, Viewer, random_token};
use crate::view::{Choice, GrantRow, RequestRow, When, approve_durations, badge, human_span};

pub(crate) type Page = Result<Response, Response>;

/// What every page shows around its content.
pub(crate) struct Layout {
    pub title: String,
    pub user: Option<String>,
    pub admin: bool,
    pub csrf: String,
    pub notice: Option<String>,
    pub error: Option<String>,
}

impl Layout {
    pub(crate) fn new(title: impl Into<String>, viewer: Option<&Viewer>) -> Layout {
        Layout {
            title: title.into(),
            user: viewer.map(|v| v.actor.id.clone()),
            admin: viewer.is_some_and(|v| v.actor.admin),
            csrf: viewer.map(|v| v.csrf.clone()).unwrap_or_default(),
            notice: None,
            error: None,
        }
    }
}

pub(crate) fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a portal template failed to render");
            plain_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be shown.",
            )
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    message: String,
}

/// An error page without a session (the CSRF refusal, a body too large).
pub(crate) fn plain_error(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        layout: Layout::new(status.canonical_reason().unwrap_or("Error"), None),
        message: message.to_owned(),
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, message.to_owned()).into_response(),
    }
}

fn error_page(status: StatusCode, viewer: Option<&Viewer>, message: impl Into<String>) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    render(
        status,
        &ErrorPage {
            layout: Layout::new(title, viewer),
            message: message.into(),
        },
    )
}

/// The status and message an engine refusal is shown with.
fn refusal(e: &EngineError) -> (StatusCode, String) {
    match e {
        EngineError::NotFound(what) => (StatusCode::NOT_FOUND, format!("{what} was not found.")),
        EngineError::Domain(DomainError::Invalid(m)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, m.clone())
        }
        EngineError::Domain(DomainError::Forbidden(m)) => (StatusCode::FORBIDDEN, m.clone()),
        EngineError::Domain(DomainError::Conflict(m)) => (StatusCode::CONFLICT, m.clone()),
        EngineError::Upstream(m) => (StatusCode::BAD_GATEWAY, m.clone()),
        EngineError::Store(e) => {
            tracing::error!(error = %e, "storage failure");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Countersign could not complete that; nothing was changed. Try again.".into(),
            )
        }
    }
}

pub(crate) fn fail(viewer: &Viewer, e: EngineError) -> Response {
    let (status, message) = refusal(&e);
    error_page(status, Some(viewer), message)
}

/// The signed-in viewer, or a redirect to the sign-in page that comes back here.
pub(crate) fn signed_in(portal: &Portal, current: &Current, uri: &Uri) -> Result<Viewer, Response> {
    current.viewer(&portal.engine).ok_or_else(|| {
        let next = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let q = serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default();
        Redirect::to(&format!("/login?{q}")).into_response()
    })
}

pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

pub(crate) async fn home(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    uri: Uri,
) -> Page {
    signed_in(&portal, &current, &uri)?;
    Ok(see_other("/inbox"))
}

// ---------------------------------------------------------------------------------------
// Sign-in

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    pre: String,
    oidc: Option<String>,
    dev_users: Vec<String>,
}

#[derive(Deserialize)]
pub(crate) struct NextQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    error: String,
}

pub(crate) async fn login(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    headers: axum::http::HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = session::local_path(&q.next);
    if current.viewer(&portal.engine).is_some() {
        return see_other(&next);
    }
    let cookies = portal.cookies();
    let config = portal.engine.config();
    // The double-submit token of the forms on this page, before there is a session.
    let pre = session::cookie(&headers, cookies.pre_name())
        .filter(|v| v.len() >= 32 && v.len() <= 64)
        .map_or_else(random_token, str::to_owned);
    let dev_users = if portal.options.dev_login {
        config.directory.users().map(|(u, _)| u.clone()).collect()
    } else {
        vec![]
    };
    let mut layout = Layout::new("Sign in", None);
    layout.csrf = pre.clone();
    layout.error = match q.error.as_str() {
        "" => None,
        "denied" => Some("The identity provider did not sign you in.".into()),
        "unknown" => Some(
            "You signed in, but you are not a Countersign user. Ask an admin to add you.".into(),
        ),
        "expired" => Some("That sign-in took too long or was already used. Try again.".into()),
        _ => Some("Sign-in failed. Try again.".into()),
    };
    let page = LoginPage {
        layout,
        next,
        pre: pre.clone(),
        oidc: config.oidc.as_ref().map(|o| o.issuer.clone()),
        dev_users,
    };
    let mut res = render(StatusCode::OK, &page);
    if let Ok(v) = HeaderValue::from_str(&cookies.set(cookies.pre_name(), &pre, 3600)) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// Starts an OpenID Connect sign-in: a session that holds only the state, nonce and PKCE
/// verifier, then off to the issuer.
pub(crate) async fn login_oidc(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Query(q): Query<NextQuery>,
) -> Response {
    let config = portal.engine.config();
    let Some(oidc) = config.oidc.clone() else {
        return error_page(
            StatusCode::NOT_FOUND,
            None,
            "OpenID Connect sign-in is not configured.",
        );
    };
    // This is a plain link, which any site can point at: it must not end the session of
    // someone signed in (that would be a sign-out forged from elsewhere).
    if current.viewer(&portal.engine).is_some() {
        return see_other(&session::local_path(&q.next));
    }
    let login = PendingLogin {
        state: random_token(),
        nonce: random_token(),
        verifier: random_token(),
        next: session::local_path(&q.next),
    };
    let redirect_uri = callback_url(&config.server.public_url);
    let url = match portal
        .oidc
        .authorize_url(&oidc, &redirect_uri, &login, portal.engine.now())
        .await
    {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "OpenID Connect discovery failed");
            return error_page(
                StatusCode::BAD_GATEWAY,
                None,
                format!("The identity provider could not be reached: {e}"),
            );
        }
    };
    let cookies = portal.cookies();
    let id = match session::start_login(&portal.engine, &login).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "a sign-in could not be started");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "Too many sign-ins are under way; try again in a few minutes.",
            );
        }
    };
    let cookie = cookies.set(cookies.login_name(), &id, session::LOGIN_TTL_MS / 1000);
    with_cookie(see_other(&url), &cookie)
}

fn callback_url(public_url: &str) -> String {
    format!("{}/login/callback", public_url.trim_end_matches('/'))
}

fn with_cookie(mut res: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

#[derive(Deserialize)]
pub(crate) struct CallbackQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: String,
}

/// The issuer sends the browser back here with a code: the state must match the session's,
/// the code is exchanged with the PKCE verifier, the ID token verified, and the email claim
/// must name a configured user.
pub(crate) async fn login_callback(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    headers: axum::http::HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let config = portal.engine.config();
    let Some(oidc) = config.oidc.clone() else {
        return error_page(
            StatusCode::NOT_FOUND,
            None,
            "OpenID Connect sign-in is not configured.",
        );
    };
    let cookies = portal.cookies();
    let clear = cookies.set(cookies.login_name(), "", 0);
    // The sign-in under way is taken out whatever happens next: it can be used once.
    let login = match session::cookie(&headers, cookies.login_name()) {
        Some(id) => session::take_login(&portal.engine, id).await,
        None => None,
    };
    let Some(login) = login else {
        return with_cookie(see_other("/login?error=expired"), &clear);
    };
    if !session::same_secret(&q.state, &login.state) {
        tracing::info!("OpenID Connect callback with a state that does not match the sign-in");
        return with_cookie(see_other("/login?error=expired"), &clear);
    }
    if !q.error.is_empty() || q.code.is_empty() {
        return with_cookie(see_other("/login?error=denied"), &clear);
    }
    let redirect_uri = callback_url(&config.server.public_url);
    let claims = match portal
        .oidc
        .finish(&oidc, &redirect_uri, &q.code, &login, portal.engine.now())
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "OpenID Connect sign-in failed");
            return with_cookie(see_other("/login?error=failed"), &clear);
        }
    };
    // Email addresses are compared without regard to case; the configured spelling is the
    // user's id.
    let user = config
        .directory
        .users()
        .map(|(u, _)| u)
        .find(|u| u.eq_ignore_ascii_case(&claims.email))
        .cloned();
    let Some(user) = user else {
        tracing::info!(email = %claims.email, "signed in at the issuer but not a configured user");
        return with_cookie(see_other("/login?error=unknown"), &clear);
    };
    let groups = claims
        .groups
        .into_iter()
        .filter(|g| config.directory.knows(&Principal::Group(g.clone())))
        .collect();
    let data = SessionData {
        via: "oidc".into(),
        groups,
    };
    let replaces = current.row.as_ref().map(|r| r.hash.clone());
    match session::sign_in(&portal.engine, cookies, &user, data, replaces).await {
        Ok(cookie) => with_cookie(with_cookie(see_other(&login.next), &cookie), &clear),
        Err(e) => {
            let (status, m) = refusal(&e);
            error_page(status, None, m)
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct DevLogin {
    user: String,
    #[serde(default)]
    next: String,
}

/// The development sign-in (`countersign serve --dev`, loopback only): any configured user.
pub(crate) async fn login_dev(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Form(f): Form<DevLogin>,
) -> Response {
    if !portal.options.dev_login {
        return error_page(
            StatusCode::NOT_FOUND,
            None,
            "The development sign-in is off.",
        );
    }
    let known = portal.engine.actor(&f.user).is_some_and(|a| !a.app);
    if !known {
        return error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            format!("{} is not a configured user.", f.user),
        );
    }
    let data = SessionData {
        via: "dev".into(),
        ..SessionData::default()
    };
    let replaces = current.row.as_ref().map(|r| r.hash.clone());
    match session::sign_in(&portal.engine, portal.cookies(), &f.user, data, replaces).await {
        Ok(cookie) => with_cookie(see_other(&session::local_path(&f.next)), &cookie),
        Err(e) => {
            let (status, m) = refusal(&e);
            error_page(status, None, m)
        }
    }
}

pub(crate) async fn logout(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
) -> Response {
    let cookies = portal.cookies();
    if let Some(row) = &current.row
        && let Err(e) = portal.engine.end_session(row.hash.clone()).await
    {
        let (status, m) = refusal(&e);
        return error_page(status, None, m);
    }
    with_cookie(
        see_other("/login"),
        &cookies.set(cookies.session_name(), "", 0),
    )
}

// ---------------------------------------------------------------------------------------
// Catalog and request form

struct CatalogEntry {
    name: String,
    description: String,
    durations: String,
    part_of: String,
    approval_only: bool,
    steps: Vec<String>,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    layout: Layout,
    resources: Vec<CatalogEntry>,
}

pub(crate) async fn catalog(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    uri: Uri,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let config = portal.engine.config();
    let resources = config
        .resources
        .values()
        // An action resource (issue 18) is asked by the program that will run the action.
        .filter(|r| r.action.is_none())
        .map(|r| {
            let v = api::convert::resource(r, &config.directory, &viewer.actor.id);
            CatalogEntry {
                name: v.name,
                description: v.description,
                durations: if v.durations.is_empty() {
                    format!("up to {}", v.max_duration)
                } else {
                    v.durations.join(", ")
                },
                part_of: v.part_of.unwrap_or_default(),
                approval_only: v.approval_only,
                steps: v
                    .steps
                    .iter()
                    .map(|s| engine::present::step_sentence(&s.constraint, s.min, &s.reviewers))
                    .collect(),
            }
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &CatalogPage {
            layout: Layout::new("Catalog", Some(&viewer)),
            resources,
        },
    ))
}

/// One input of the request form.
struct FieldInput {
    name: String,
    /// text, number, checkbox, select or duration.
    kind: &'static str,
    required: bool,
    description: String,
    value: String,
    checked: bool,
    choices: Vec<Choice>,
    /// Why the choices could not be loaded.
    problem: String,
}

#[derive(Template)]
#[template(path = "request_form.html")]
struct RequestForm {
    layout: Layout,
    name: String,
    description: String,
    fields: Vec<FieldInput>,
    durations: Vec<Choice>,
    free_duration: String,
    reason: String,
    steps: Vec<String>,
    break_glass: Option<BreakGlassChoice>,
}

/// The request form's break-glass box (rule 34), on resources that allow it.
struct BreakGlassChoice {
    checked: bool,
    max_duration: String,
    review_within: String,
    reviewers: String,
}

async fn form_page(
    portal: &Portal,
    viewer: &Viewer,
    name: &str,
    sent: &BTreeMap<String, String>,
) -> Result<RequestForm, Response> {
    let config = portal.engine.config();
    let Some(r) = config.resources.get(name).filter(|r| r.action.is_none()) else {
        return Err(error_page(
            StatusCode::NOT_FOUND,
            Some(viewer),
            format!("There is no resource called {name:?} to ask for here."),
        ));
    };
    let mut fields = vec![];
    for f in &r.fields {
        let key = format!("field.{}", f.name);
        let value = sent.get(&key).cloned().unwrap_or_else(|| {
            f.default
                .as_ref()
                .map(|d| match d {
                    domain::FieldValue::String(s) => s.clone(),
                    other => api::convert::field_text(other),
                })
                .unwrap_or_default()
        });
        let mut input = FieldInput {
            name: f.name.clone(),
            kind: "text",
            required: f.required,
            description: f.description.clone(),
            checked: false,
            choices: vec![],
            problem: String::new(),
            value: value.clone(),
        };
        match &f.kind {
            FieldType::Int => input.kind = "number",
            FieldType::Bool => {
                input.kind = "checkbox";
                input.checked = matches!(value.as_str(), "true" | "on");
            }
            FieldType::Duration => input.kind = "duration",
            FieldType::Enum(values) => {
                input.kind = "select";
                input.choices = values
                    .iter()
                    .map(|v| Choice {
                        value: v.clone(),
                        label: v.clone(),
                        selected: *v == value,
                    })
                    .collect();
            }
            FieldType::User => {
                input.kind = "select";
                input.choices = config
                    .directory
                    .users()
                    .map(|(u, _)| Choice {
                        value: u.clone(),
                        label: u.clone(),
                        selected: *u == value,
                    })
                    .collect();
            }
            FieldType::String if f.dynamic => {
                input.kind = "select";
                match portal.engine.field_options(name, &f.name).await {
                    Ok(options) => {
                        input.choices = options
                            .into_iter()
                            .map(|o| Choice {
                                selected: o.value == value,
                                value: o.value,
                                label: o.label,
                            })
                            .collect();
                    }
                    Err(e) => input.problem = refusal(&e).1,
                }
            }
            FieldType::String => {}
        }
        fields.push(input);
    }
    let chosen = sent
        .get("duration")
        .cloned()
        .unwrap_or_else(|| r.default_duration().to_string());
    let durations = r
        .durations
        .iter()
        .map(|d| Choice {
            value: d.to_string(),
            label: human_span(*d),
            selected: d.to_string() == chosen,
        })
        .collect();
    let v = api::convert::resource(r, &config.directory, &viewer.actor.id);
    Ok(RequestForm {
        layout: Layout::new(format!("Request {name}"), Some(viewer)),
        name: name.to_owned(),
        description: r.description.clone(),
        fields,
        durations,
        free_duration: if r.durations.is_empty() {
            chosen
        } else {
            String::new()
        },
        reason: sent.get("reason").cloned().unwrap_or_default(),
        steps: v
            .steps
            .iter()
            .map(|s| engine::present::step_sentence(&s.constraint, s.min, &s.reviewers))
            .collect(),
        break_glass: r.break_glass.as_ref().map(|b| BreakGlassChoice {
            checked: sent.get("break_glass").is_some_and(|v| ticked(v)),
            max_duration: human_span(b.max_duration),
            review_within: human_span(b.review_within),
            reviewers: b
                .reviewers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    })
}

/// Whether a checkbox arrived ticked.
fn ticked(v: &str) -> bool {
    v == "true" || v == "on"
}

pub(crate) async fn request_form(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(name): Path<String>,
    uri: Uri,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let page = form_page(&portal, &viewer, &name, &BTreeMap::new()).await?;
    Ok(render(StatusCode::OK, &page))
}

/// The request form's fields arrive as `field.<name>`; a checkbox that is not ticked does not
/// arrive at all, and means `false`.
pub(crate) async fn create(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(name): Path<String>,
    uri: Uri,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let sent: BTreeMap<String, String> = pairs.into_iter().collect();
    let config = portal.engine.config();
    let Some(r) = config.resources.get(&name) else {
        return Err(error_page(
            StatusCode::NOT_FOUND,
            Some(&viewer),
            format!("There is no resource called {name:?}."),
        ));
    };
    let mut fields = BTreeMap::new();
    for f in &r.fields {
        let value = sent.get(&format!("field.{}", f.name)).map(|v| v.trim());
        match (&f.kind, value) {
            (FieldType::Bool, v) => {
                fields.insert(f.name.clone(), Input::Bool(v.is_some_and(ticked)));
            }
            (_, Some(v)) if !v.is_empty() => {
                fields.insert(f.name.clone(), Input::Text(v.to_owned()));
            }
            _ => {}
        }
    }
    let duration = match sent
        .get("duration")
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
    {
        Some(d) => match Span::parse(d) {
            Ok(s) => Some(s),
            Err(e) => {
                return Ok(form_again(
                    &portal,
                    &viewer,
                    &name,
                    &sent,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    e.to_string(),
                )
                .await);
            }
        },
        None => None,
    };
    // The form's duration starts at the resource's default, which may be longer than its
    // break-glass allows: ticking the box asks for at most that (rule 34).
    let break_glass = sent.get("break_glass").is_some_and(|v| ticked(v));
    let duration = match (&r.break_glass, break_glass) {
        (Some(b), true) => duration.map(|d| d.min(b.max_duration)),
        _ => duration,
    };
    let created = portal
        .engine
        .create_request(
            &viewer.actor,
            CreateRequest {
                resource: name.clone(),
                reason: sent.get("reason").cloned().unwrap_or_default(),
                duration,
                fields,
                start_at: None,
                requester: None,
                context: domain::Context::default(),
                idempotency: None,
                break_glass,
                run: None,
                // An action (issue 18) is asked by the program that will run it.
                action: None,
            },
        )
        .await;
    match created {
        Ok(c) => Ok(see_other(&format!(
            "/requests/{}?done=created",
            c.request.id
        ))),
        Err(e) => {
            let (status, message) = refusal(&e);
            Ok(form_again(&portal, &viewer, &name, &sent, status, message).await)
        }
    }
}

async fn form_again(
    portal: &Portal,
    viewer: &Viewer,
    name: &str,
    sent: &BTreeMap<String, String>,
    status: StatusCode,
    message: String,
) -> Response {
    match form_page(portal, viewer, name, sent).await {
        Ok(mut page) => {
            page.layout.error = Some(message);
            render(status, &page)
        }
        Err(res) => res,
    }
}

// ---------------------------------------------------------------------------------------
// Lists

#[derive(Template)]
#[template(path = "mine.html")]
struct MinePage {
    layout: Layout,
    requests: Vec<RequestRow>,
    grants: Vec<GrantRow>,
}

pub(crate) async fn mine(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    uri: Uri,
    Query(q): Query<DoneQuery>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let now = portal.engine.now();
    let requests = portal
        .engine
        .list_requests(
            &viewer.actor,
            RequestQuery {
                requester: Some(viewer.actor.id.clone()),
                limit: 100,
                ..RequestQuery::default()
            },
        )
        .await
        .map_err(|e| fail(&viewer, e))?
        .items;
    let grants = portal
        .engine
        .list_grants(
            &viewer.actor,
            GrantQuery {
                subject: Some(viewer.actor.id.clone()),
                limit: 100,
                ..GrantQuery::default()
            },
        )
        .await
        .map_err(|e| fail(&viewer, e))?
        .items;
    let mut layout = Layout::new("My requests and grants", Some(&viewer));
    layout.notice = notice(&q.done);
    Ok(render(
        StatusCode::OK,
        &MinePage {
            layout,
            requests: requests.iter().map(|r| RequestRow::new(r, now)).collect(),
            grants: grants.iter().map(|g| GrantRow::new(g, now)).collect(),
        },
    ))
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage {
    layout: Layout,
    requests: Vec<RequestRow>,
    /// The link to the next page, if there is one.
    more: Option<String>,
}

/// A list page's only parameter: where the page starts.
#[derive(Deserialize, Default)]
pub(crate) struct PageQuery {
    #[serde(default)]
    cursor: String,
}

/// Requests in the portal's lists per page.
const PAGE_SIZE: u32 = 100;

/// Requests waiting for the viewer's decision, oldest first, a page at a time.
pub(crate) async fn inbox(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    uri: Uri,
    Query(q): Query<PageQuery>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let now = portal.engine.now();
    let scope = api::cursor::Scope::new("portal-inbox", &viewer.actor.id);
    let after = page_start(&viewer, &scope, &q.cursor)?;
    let page = portal
        .engine
        .list_requests(
            &viewer.actor,
            RequestQuery {
                reviewable_by_me: true,
                limit: PAGE_SIZE,
                oldest_first: true,
                after,
                ..RequestQuery::default()
            },
        )
        .await
        .map_err(|e| fail(&viewer, e))?;
    Ok(render(
        StatusCode::OK,
        &InboxPage {
            layout: Layout::new("Inbox", Some(&viewer)),
            requests: page.items.iter().map(|r| RequestRow::new(r, now)).collect(),
            more: page
                .next
                .map(|p| next_page("/inbox", &[], scope.position_cursor(&p))),
        },
    ))
}

// ---------------------------------------------------------------------------------------
// The request page

struct ReviewLine {
    by: String,
    decision: String,
    badge: &'static str,
    comment: String,
    duration: String,
    workflow: bool,
    at: When,
}

struct StepBlock {
    index: usize,
    status: String,
    badge: &'static str,
    rule: String,
    eligible: String,
    reviews: Vec<ReviewLine>,
    assignments: Vec<String>,
    skipped: String,
    current: bool,
}

struct CommentLine {
    by: String,
    text: String,
    at: When,
}

/// One notification about the request (rule 32): what went to whom, and how it went.
struct NotificationLine {
    event: String,
    channel: String,
    to: String,
    state: String,
    /// The badge's CSS classes (`badge ok`, …).
    badge: &'static str,
    attempts: u32,
    error: String,
    at: When,
}

/// A break-glass follow-up on the request page (rule 34), from the presenter's view.
struct FollowUpBlock {
    state: String,
    badge: &'static str,
    reviewers: String,
    due: When,
    overdue: bool,
    /// Who closed it, when, and what they said; empty while open.
    closed: String,
}

/// The most notifications the request page shows (the latest ones; the API lists them all).
const PAGE_NOTIFICATIONS: usize = 50;

#[derive(Template)]
#[template(path = "request.html")]
struct RequestPage {
    layout: Layout,
    id: String,
    resource: String,
    description: String,
    state: String,
    badge: &'static str,
    requester: String,
    requester_is_viewer: bool,
    created_by: String,
    created: When,
    pending_until: When,
    duration: String,
    reason: String,
    purpose_html: String,
    reference_url: String,
    correlation_id: String,
    /// The one action asked for (issue 18), with its arguments as printed.
    action: Option<(proto::ActionView, String)>,
    fields: Vec<(String, String)>,
    warnings: Vec<String>,
    explanation: Vec<String>,
    steps: Vec<StepBlock>,
    comments: Vec<CommentLine>,
    outcome: String,
    grant: Option<GrantRow>,
    can_decide: bool,
    decided: bool,
    durations: Vec<Choice>,
    part_of: String,
    can_comment: bool,
    can_cancel: bool,
    can_revoke: bool,
    assignees: Vec<String>,
    notifications: Vec<NotificationLine>,
    /// Notifications left out of the page (older than the ones shown).
    notifications_older: usize,
    follow_up: Option<FollowUpBlock>,
    can_close_follow_up: bool,
}

#[derive(Deserialize, Default)]
pub(crate) struct DoneQuery {
    #[serde(default)]
    done: String,
}

/// The notice a finished action leaves; only these fixed texts are shown.
fn notice(done: &str) -> Option<String> {
    Some(
        match done {
            "created" => "Your request was created.",
            "approved" => "You approved this request.",
            "denied" => "You denied this request.",
            "commented" => "Your comment was added.",
            "assigned" => "The step was assigned.",
            "cancelled" => "The request was cancelled.",
            "acknowledged" => "You acknowledged this break-glass.",
            "flagged" => "You flagged this break-glass; its grant is being revoked.",
            "dropped" => "The grant is being revoked.",
            "revoked" => "The grant is being revoked.",
            _ => return None,
        }
        .to_owned(),
    )
}

async fn request_view(portal: &Portal, viewer: &Viewer, r: &Request) -> RequestPage {
    let engine = &portal.engine;
    let now = engine.now();
    // What was sent about it, for whoever may see it (as the API's list); a store error
    // leaves the section empty rather than the page unreadable.
    let sent = engine
        .notifications(&viewer.actor, &r.id)
        .await
        .unwrap_or_default();
    let config = engine.config();
    let me = &viewer.actor.id;
    let current = r.current_step();
    let summary = engine::present::summary(r);
    let actions = engine::present::actions(r, &viewer.actor);
    let steps = r
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let eligible = if current == Some(i) {
                r.eligible_reviewers()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                String::new()
            };
            StepBlock {
                index: i + 1,
                status: s.status.as_str().to_owned(),
                badge: badge(match s.status.as_str() {
                    "active" => "pending",
                    other => other,
                }),
                rule: summary.steps.get(i).cloned().unwrap_or_default(),
                eligible,
                reviews: s
                    .reviews
                    .iter()
                    .map(|rv| ReviewLine {
                        by: rv.by.clone(),
                        decision: match rv.decision {
                            Decision::Approve => "approved".into(),
                            Decision::Deny => "denied".into(),
                        },
                        badge: badge(match rv.decision {
                            Decision::Approve => "approved",
                            Decision::Deny => "denied",
                        }),
                        comment: rv.comment.clone().unwrap_or_default(),
                        duration: rv.duration.map(human_span).unwrap_or_default(),
                        workflow: rv.scope == Scope::Workflow,
                        at: When::new(rv.at, now),
                    })
                    .collect(),
                assignments: s
                    .assignments
                    .iter()
                    .map(|a| {
                        format!(
                            "{} assigned it to {} ({})",
                            a.by,
                            a.to,
                            When::new(a.at, now).relative
                        )
                    })
                    .collect(),
                skipped: s.skipped_because.clone().unwrap_or_default(),
                current: current == Some(i),
            }
        })
        .collect();
    let grant = match &r.grant {
        Some(id) => engine
            .grant(&viewer.actor, id)
            .await
            .ok()
            .map(|g| GrantRow::new(&g, now)),
        None => None,
    };
    let explanation = engine::Engine::explain_loaded(r).lines;
    let outcome = match &r.outcome {
        Some(o) if r.state.is_terminal() => {
            format!("{} ({})", summary.status, When::new(o.at, now).relative)
        }
        _ => String::new(),
    };
    let can_revoke_grant = grant.as_ref().is_some_and(|g| {
        g.active
            && g.subject != *me
            && (viewer.actor.admin
                || config
                    .resources
                    .get(&g.resource)
                    .is_some_and(|d| d.owners.iter().any(|p| viewer.actor.is(p))))
    });
    let mut assignees: Vec<String> = config.directory.users().map(|(u, _)| u.clone()).collect();
    assignees.extend(config.directory.groups().map(|g| format!("group:{g}")));
    RequestPage {
        layout: Layout::new(format!("{} for {}", r.resource, r.requester), Some(viewer)),
        id: r.id.clone(),
        resource: r.resource.clone(),
        description: config
            .resources
            .get(&r.resource)
            .map(|d| d.description.clone())
            .unwrap_or_default(),
        state: r.state.as_str().to_owned(),
        badge: badge(r.state.as_str()),
        requester: r.requester.clone(),
        requester_is_viewer: r.requester == *me,
        created_by: r.context.created_by.clone().unwrap_or_default(),
        created: When::new(r.created_at, now),
        pending_until: When::new(r.pending_until, now),
        duration: human_span(r.duration),
        reason: r.reason.clone(),
        purpose_html: r
            .context
            .purpose
            .as_deref()
            .map(markdown::render)
            .unwrap_or_default(),
        reference_url: r
            .context
            .reference_url
            .clone()
            .filter(|u| markdown::linkable(u))
            .unwrap_or_default(),
        correlation_id: r.context.correlation_id.clone().unwrap_or_default(),
        action: engine::present::action(r).map(|a| {
            let text = a.arguments_text();
            (a, text)
        }),
        fields: r
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), api::convert::field_text(v)))
            .collect(),
        warnings: r.warnings.clone(),
        explanation,
        steps,
        comments: r
            .comments
            .iter()
            .map(|c| CommentLine {
                by: c.by.clone(),
                text: c.text.clone(),
                at: When::new(c.at, now),
            })
            .collect(),
        notifications_older: sent.len().saturating_sub(PAGE_NOTIFICATIONS),
        notifications: sent
            .iter()
            .skip(sent.len().saturating_sub(PAGE_NOTIFICATIONS))
            .map(|d| {
                let n = d.notice.as_ref();
                NotificationLine {
                    event: n.map(|n| n.event.as_str().to_owned()).unwrap_or_default(),
                    channel: n.map(|n| n.channel.clone()).unwrap_or_default(),
                    to: n
                        .and_then(|n| n.to.clone())
                        .unwrap_or_else(|| n.map(|n| n.people.join(", ")).unwrap_or_default()),
                    state: d.state.as_str().to_owned(),
                    badge: badge(d.state.as_str()),
                    attempts: d.attempt_count,
                    error: d
                        .attempts
                        .last()
                        .and_then(|a| a.error.clone())
                        .filter(|_| d.state != domain::DeliveryState::Delivered)
                        .unwrap_or_default(),
                    at: When::new(d.created_at, now),
                }
            })
            .collect(),
        outcome,
        grant,
        can_decide: actions.decide,
        decided: actions.decided,
        durations: approve_durations(r),
        part_of: r.part_of.clone().unwrap_or_default(),
        can_comment: actions.comment,
        can_cancel: actions.cancel,
        // An admin or an owner of the resource may revoke someone's active grant (rule 19);
        // the engine checks it again.
        can_revoke: can_revoke_grant,
        assignees,
        follow_up: r.follow_up.as_ref().map(|f| {
            let state = f.state.as_str().to_owned();
            FollowUpBlock {
                badge: badge(match state.as_str() {
                    "open" => "pending",
                    "acknowledged" => "approved",
                    _ => "denied",
                }),
                state,
                reviewers: f
                    .slots
                    .iter()
                    .map(|s| s.principal.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                due: When::new(f.due, now),
                overdue: f.escalated_at.is_some() && f.closed.is_none(),
                closed: f
                    .closed
                    .as_ref()
                    .map(|c| {
                        let comment = c
                            .comment
                            .as_ref()
                            .map(|t| format!(": {t}"))
                            .unwrap_or_default();
                        format!(
                            "{} by {} {}{comment}",
                            engine::present::capitalised(f.state.as_str()),
                            c.by,
                            When::new(c.at, now).relative
                        )
                    })
                    .unwrap_or_default(),
            }
        }),
        can_close_follow_up: actions.close_follow_up,
    }
}

pub(crate) async fn request_page(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
    uri: Uri,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let r = portal
        .engine
        .request(&viewer.actor, &id)
        .await
        .map_err(|e| fail(&viewer, e))?;
    let mut page = request_view(&portal, &viewer, &r).await;
    page.layout.notice = notice(&q.done);
    Ok(render(StatusCode::OK, &page))
}

/// After a refused action: the request page as it is now, with the reason on top (a stale
/// page shows who decided meanwhile, not an error page).
async fn request_again(portal: &Portal, viewer: &Viewer, id: &str, e: EngineError) -> Response {
    let (status, message) = refusal(&e);
    match portal.engine.request(&viewer.actor, id).await {
        Ok(r) => {
            let mut page = request_view(portal, viewer, &r).await;
            page.layout.error = Some(message);
            render(status, &page)
        }
        Err(_) => error_page(status, Some(viewer), message),
    }
}

#[derive(Deserialize)]
pub(crate) struct ApproveForm {
    #[serde(default)]
    duration: String,
    #[serde(default)]
    workflow: Option<String>,
    #[serde(default)]
    comment: String,
}

pub(crate) fn optional(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// The position a page's `cursor` parameter holds (none when it is empty), or a 400 page.
fn page_start(
    viewer: &Viewer,
    scope: &api::cursor::Scope,
    cursor: &str,
) -> Result<Option<engine::Position>, Response> {
    if cursor.is_empty() {
        return Ok(None);
    }
    scope
        .position(cursor)
        .map(Some)
        .map_err(|e| error_page(e.status, Some(viewer), e.message))
}

/// The link to the next page of a list: `path` with the page's filters and the next cursor.
fn next_page(path: &str, filters: &[(&str, &str)], cursor: String) -> String {
    let mut q: Vec<(&str, &str)> = filters
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .copied()
        .collect();
    q.push(("cursor", &cursor));
    format!(
        "{path}?{}",
        serde_urlencoded::to_string(q).unwrap_or_default()
    )
}

pub(crate) async fn approve(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
    Form(f): Form<ApproveForm>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    // Kubiya's modal: the duration is mandatory.
    let duration = match Span::parse(f.duration.trim()) {
        Ok(d) => d,
        Err(_) => {
            let e = DomainError::Invalid("choose how long to grant access for".into());
            return Ok(request_again(&portal, &viewer, &id, e.into()).await);
        }
    };
    let input = ReviewInput {
        decision: Decision::Approve,
        comment: optional(&f.comment),
        duration: Some(duration),
        scope: if f.workflow.is_some() {
            Scope::Workflow
        } else {
            Scope::Resource
        },
    };
    decided(&portal, &viewer, &id, input, "approved").await
}

#[derive(Deserialize)]
pub(crate) struct TextForm {
    #[serde(default)]
    comment: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    duration: String,
}

pub(crate) async fn deny(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
    Form(f): Form<TextForm>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let input = ReviewInput {
        decision: Decision::Deny,
        comment: optional(&f.comment),
        duration: None,
        scope: Scope::Resource,
    };
    decided(&portal, &viewer, &id, input, "denied").await
}

async fn decided(
    portal: &Portal,
    viewer: &Viewer,
    id: &str,
    input: ReviewInput,
    done: &str,
) -> Page {
    match portal.engine.review(&viewer.actor, id, input).await {
        Ok(r) => Ok(see_other(&format!("/requests/{}?done={done}", r.id))),
        Err(e) => Ok(request_again(portal, viewer, id, e).await),
    }
}

#[derive(Deserialize)]
pub(crate) struct FollowUpForm {
    #[serde(default)]
    verdict: String,
    #[serde(default)]
    comment: String,
}

/// Rule 34: a follow-up reviewer acknowledges or flags a break-glass.
pub(crate) async fn follow_up(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
    Form(f): Form<FollowUpForm>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let (verdict, done) = match f.verdict.as_str() {
        "acknowledge" => (domain::Verdict::Acknowledge, "acknowledged"),
        "flag" => (domain::Verdict::Flag, "flagged"),
        _ => {
            let e = DomainError::Invalid("choose acknowledge or flag".into());
            return Ok(request_again(&portal, &viewer, &id, e.into()).await);
        }
    };
    match portal
        .engine
        .close_follow_up(&viewer.actor, &id, verdict, optional(&f.comment))
        .await
    {
        Ok(r) => Ok(see_other(&format!("/requests/{}?done={done}", r.id))),
        Err(e) => Ok(request_again(&portal, &viewer, &id, e).await),
    }
}

pub(crate) async fn comment(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
    Form(f): Form<TextForm>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let text = f.comment.trim().to_owned();
    if text.is_empty() {
        let e = DomainError::Invalid("write a comment first".into());
        return Ok(request_again(&portal, &viewer, &id, e.into()).await);
    }
    match portal.engine.comment(&viewer.actor, &id, text).await {
        Ok(r) => Ok(see_other(&format!(
            "/requests/{}?done=commented#comments",
            r.id
        ))),
        Err(e) => Ok(request_again(&portal, &viewer, &id, e).await),
    }
}

pub(crate) async fn assign(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
    Form(f): Form<TextForm>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let to = match Principal::parse(f.to.trim()) {
        Ok(p) => p,
        Err(e) => {
            let e = DomainError::Invalid(format!("assign to: {e}"));
            return Ok(request_again(&portal, &viewer, &id, e.into()).await);
        }
    };
    match portal.engine.assign(&viewer.actor, &id, to).await {
        Ok(r) => Ok(see_other(&format!("/requests/{}?done=assigned", r.id))),
        Err(e) => Ok(request_again(&portal, &viewer, &id, e).await),
    }
}

pub(crate) async fn cancel(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
    Form(f): Form<TextForm>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    match portal
        .engine
        .cancel(&viewer.actor, &id, optional(&f.reason))
        .await
    {
        Ok(r) => Ok(see_other(&format!("/requests/{}?done=cancelled", r.id))),
        Err(e) => Ok(request_again(&portal, &viewer, &id, e).await),
    }
}

// ---------------------------------------------------------------------------------------
// Grants

/// A requester drops their own grant (rule 19).
pub(crate) async fn drop_grant(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    match portal.engine.revoke_grant(&viewer.actor, &id, None).await {
        Ok(_) => Ok(see_other("/mine?done=dropped")),
        Err(e) => Err(fail(&viewer, e)),
    }
}

/// An owner or admin revokes a grant, with a reason (rule 19).
pub(crate) async fn revoke_grant(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
    Form(f): Form<TextForm>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    match portal
        .engine
        .revoke_grant(&viewer.actor, &id, optional(&f.reason))
        .await
    {
        Ok(_) if viewer.actor.admin => Ok(see_other("/admin/grants?done=revoked")),
        Ok(g) => Ok(see_other(&format!(
            "/requests/{}?done=revoked",
            g.spec.request
        ))),
        Err(e) => Err(fail(&viewer, e)),
    }
}

/// Asks for more time on an active grant: a new request through the same workflow.
pub(crate) async fn extend_grant(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
    Form(f): Form<TextForm>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let duration = match optional(&f.duration).map(|d| Span::parse(&d)) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            return Err(error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&viewer),
                e.to_string(),
            ));
        }
        None => None,
    };
    match portal
        .engine
        .extend_grant(&viewer.actor, &id, duration, f.reason.trim().to_owned())
        .await
    {
        Ok(r) => Ok(see_other(&format!("/requests/{}?done=created", r.id))),
        Err(e) => Err(fail(&viewer, e)),
    }
}

// ---------------------------------------------------------------------------------------
// Admin

fn admin_only(viewer: &Viewer) -> Result<(), Response> {
    if viewer.actor.admin {
        Ok(())
    } else {
        Err(error_page(
            StatusCode::FORBIDDEN,
            Some(viewer),
            "Only admins may open this page.",
        ))
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct AdminFilter {
    #[serde(default)]
    state: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    requester: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    done: String,
    #[serde(default)]
    cursor: String,
}

#[derive(Template)]
#[template(path = "admin_requests.html")]
struct AdminRequestsPage {
    layout: Layout,
    requests: Vec<RequestRow>,
    states: Vec<Choice>,
    resources: Vec<Choice>,
    requester: String,
    from: String,
    to: String,
    more: Option<String>,
}

/// An admin page's `state` filter: empty for any, else a state `parse` knows (400 if not).
fn state_filter<T>(
    viewer: &Viewer,
    text: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, Response> {
    if text.is_empty() {
        return Ok(None);
    }
    parse(text).map(Some).ok_or_else(|| {
        error_page(
            StatusCode::BAD_REQUEST,
            Some(viewer),
            format!("unknown state {text:?}"),
        )
    })
}

/// `2026-01-31` → the first millisecond of that day (UTC).
fn day(text: &str) -> Result<Option<domain::Timestamp>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    api::convert::parse_ts(&format!("{t}T00:00:00Z"))
        .map(Some)
        .ok_or_else(|| format!("{t:?} is not a date (write 2026-01-31)"))
}

pub(crate) async fn admin_requests(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    uri: Uri,
    Query(f): Query<AdminFilter>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    admin_only(&viewer)?;
    let now = portal.engine.now();
    let state = state_filter(&viewer, &f.state, RequestState::parse)?;
    let (from, to) = match (day(&f.from), day(&f.to)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return Err(error_page(StatusCode::BAD_REQUEST, Some(&viewer), e));
        }
    };
    let (resource, requester) = (optional(&f.resource), optional(&f.requester));
    let scope = api::cursor::Scope::new("portal-requests", &viewer.actor.id)
        .filter("state", Some(f.state.as_str()))
        .filter("resource", resource.as_deref())
        .filter("requester", requester.as_deref())
        .filter("from", Some(f.from.trim()))
        .filter("to", Some(f.to.trim()));
    let after = page_start(&viewer, &scope, &f.cursor)?;
    let page = portal
        .engine
        .list_requests(
            &viewer.actor,
            RequestQuery {
                state,
                resource: resource.clone(),
                requester: requester.clone(),
                reviewable_by_me: false,
                limit: PAGE_SIZE,
                created_from: from,
                // `to` is a day, included.
                created_before: to.map(|t| domain::Timestamp::from_millis(t.millis() + 86_400_000)),
                oldest_first: false,
                after,
            },
        )
        .await
        .map_err(|e| fail(&viewer, e))?;
    let rows = page.items.iter().map(|r| RequestRow::new(r, now)).collect();
    let more = page.next.map(|p| {
        next_page(
            "/admin/requests",
            &[
                ("state", f.state.as_str()),
                ("resource", resource.as_deref().unwrap_or_default()),
                ("requester", requester.as_deref().unwrap_or_default()),
                ("from", f.from.trim()),
                ("to", f.to.trim()),
            ],
            scope.position_cursor(&p),
        )
    });
    let config = portal.engine.config();
    let mut states = vec![Choice {
        value: String::new(),
        label: "any state".into(),
        selected: f.state.is_empty(),
    }];
    states.extend(
        ["pending", "approved", "denied", "cancelled", "expired"].map(|s| Choice {
            value: s.into(),
            label: s.into(),
            selected: f.state == s,
        }),
    );
    let mut resources = vec![Choice {
        value: String::new(),
        label: "any resource".into(),
        selected: f.resource.is_empty(),
    }];
    resources.extend(config.resources.keys().map(|r| Choice {
        value: r.clone(),
        label: r.clone(),
        selected: f.resource == *r,
    }));
    let mut layout = Layout::new("All requests", Some(&viewer));
    layout.notice = notice(&f.done);
    Ok(render(
        StatusCode::OK,
        &AdminRequestsPage {
            layout,
            requests: rows,
            states,
            resources,
            requester: f.requester,
            from: f.from,
            to: f.to,
            more,
        },
    ))
}

#[derive(Template)]
#[template(path = "admin_grants.html")]
struct AdminGrantsPage {
    layout: Layout,
    grants: Vec<GrantRow>,
    more: Option<String>,
}

pub(crate) async fn admin_grants(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    uri: Uri,
    Query(f): Query<AdminFilter>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    admin_only(&viewer)?;
    let now = portal.engine.now();
    let state = state_filter(&viewer, &f.state, GrantState::parse)?;
    let (resource, subject) = (optional(&f.resource), optional(&f.requester));
    let scope = api::cursor::Scope::new("portal-grants", &viewer.actor.id)
        .filter("state", Some(f.state.as_str()))
        .filter("resource", resource.as_deref())
        .filter("subject", subject.as_deref());
    let after = page_start(&viewer, &scope, &f.cursor)?;
    let page = portal
        .engine
        .list_grants(
            &viewer.actor,
            GrantQuery {
                state,
                resource: resource.clone(),
                subject: subject.clone(),
                limit: PAGE_SIZE,
                after,
            },
        )
        .await
        .map_err(|e| fail(&viewer, e))?;
    let more = page.next.map(|p| {
        next_page(
            "/admin/grants",
            &[
                ("state", f.state.as_str()),
                ("resource", resource.as_deref().unwrap_or_default()),
                ("requester", subject.as_deref().unwrap_or_default()),
            ],
            scope.position_cursor(&p),
        )
    });
    let mut layout = Layout::new("Grants", Some(&viewer));
    layout.notice = notice(&f.done);
    Ok(render(
        StatusCode::OK,
        &AdminGrantsPage {
            layout,
            grants: page.items.iter().map(|g| GrantRow::new(g, now)).collect(),
            more,
        },
    ))
}

struct AuditLine {
    seq: i64,
    at: When,
    kind: String,
    actor: String,
    request: String,
    grant: String,
    detail: String,
    hash: String,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AdminAuditPage {
    layout: Layout,
    events: Vec<AuditLine>,
    verified: Option<String>,
    broken: Option<String>,
    /// Where this page started, kept by the verify form.
    after: i64,
    /// The link to the later events, if there are any.
    next: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    verify: String,
    #[serde(default)]
    cursor: String,
}

pub(crate) async fn admin_audit(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    uri: Uri,
    Query(q): Query<AuditQuery>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    admin_only(&viewer)?;
    let now = portal.engine.now();
    const PAGE: u32 = 100;
    let scope = api::cursor::Scope::new("portal-audit", &viewer.actor.id);
    let after = if q.cursor.is_empty() {
        q.after.max(0)
    } else {
        scope
            .seq(&q.cursor)
            .map_err(|e| error_page(e.status, Some(&viewer), e.message))?
    };
    let page = portal
        .engine
        .audit(&viewer.actor, after, PAGE)
        .await
        .map_err(|e| fail(&viewer, e))?;
    let events = page.items;
    let (mut verified, mut broken) = (None, None);
    if !q.verify.is_empty() {
        let v = portal
            .engine
            .verify_audit(&viewer.actor)
            .await
            .map_err(|e| fail(&viewer, e))?;
        if v.ok {
            verified = Some(format!(
                "The hash chain is intact: {} events checked, head {}.",
                v.checked,
                v.head.unwrap_or_default()
            ));
        } else {
            broken = Some(
                v.error
                    .unwrap_or_else(|| "The hash chain is broken.".into()),
            );
        }
    }
    // The position where this page started, for the verify form, and the next page's link.
    let next = page
        .next
        .map(|seq| next_page("/admin/audit", &[], scope.seq_cursor(seq)));
    let events = events
        .iter()
        .map(|e| {
            let body: serde_json::Value = serde_json::from_str(&e.body).unwrap_or_default();
            let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
            let detail = body["detail"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| match v.as_str() {
                            Some(s) => format!("{k}={s}"),
                            None => format!("{k}={v}"),
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            AuditLine {
                seq: e.seq,
                at: When::new(domain::Timestamp::from_millis(e.at), now),
                kind: text("kind"),
                actor: text("actor"),
                request: text("request"),
                grant: text("grant"),
                detail: crate::view::short(&detail, 160),
                hash: e.hash.chars().take(12).collect(),
            }
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &AdminAuditPage {
            layout: Layout::new("Audit log", Some(&viewer)),
            events,
            verified,
            broken,
            after,
            next,
        },
    ))
}

#[derive(Template)]
#[template(path = "slack_link.html")]
struct SlackLinkPage {
    layout: Layout,
    account: String,
    /// The Slack user name the command came with.
    name: String,
    person: String,
    secret: String,
    done: bool,
}

/// The page a `/countersign link` URL opens (rule 35): who would act as the signed-in
/// person, and a button that links. Opening it changes nothing.
pub(crate) async fn slack_link_page(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(secret): Path<String>,
    uri: Uri,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let (account, name) = portal
        .engine
        .slack_link_account(&secret)
        .await
        .map_err(|e| fail(&viewer, e))?
        .ok_or_else(|| {
            error_page(
                StatusCode::NOT_FOUND,
                Some(&viewer),
                "This link has expired or was used already; type /countersign link in Slack again.",
            )
        })?;
    Ok(render(
        StatusCode::OK,
        &SlackLinkPage {
            layout: Layout::new("Link your Slack account", Some(&viewer)),
            account,
            name,
            person: viewer.actor.id.clone(),
            secret,
            done: false,
        },
    ))
}

/// Links the Slack account of a `/countersign link` URL to the signed-in person.
pub(crate) async fn slack_link(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(secret): Path<String>,
    uri: Uri,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let account = portal
        .engine
        .finish_slack_link(&viewer.actor, &secret)
        .await
        .map_err(|e| fail(&viewer, e))?;
    Ok(render(
        StatusCode::OK,
        &SlackLinkPage {
            layout: Layout::new("Slack account linked", Some(&viewer)),
            account,
            name: String::new(),
            person: viewer.actor.id.clone(),
            secret: String::new(),
            done: true,
        },
    ))
}
