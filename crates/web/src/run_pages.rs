//! The portal's pages of gated runbooks (issue 17): the runbook catalog with the viewer's
//! runs, and a run's page with its step timeline, outputs and messages, the input form,
//! "Request access" with a reason, "Resume" and "Cancel". Every page shows the run through
//! the one presenter (`engine::present::run`), as the API and the CLI do.

use askama::Template;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, Uri};
use axum::{Form, response::Response};
use serde::Deserialize;

use crate::Portal;
use crate::pages::{Layout, Page, fail, optional, render, see_other, signed_in};
use crate::session::Current;
use crate::view::badge;

struct RunbookEntry {
    name: String,
    description: String,
    steps: Vec<String>,
}

struct RunRow {
    id: String,
    runbook: String,
    state: String,
    badge: &'static str,
    step: String,
    created: String,
}

#[derive(Template)]
#[template(path = "runbooks.html")]
struct RunbooksPage {
    layout: Layout,
    runbooks: Vec<RunbookEntry>,
    runs: Vec<RunRow>,
}

/// The most runs the catalog page lists.
const RECENT_RUNS: u32 = 50;

pub(crate) async fn runbooks(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    uri: Uri,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let config = portal.engine.config();
    let runbooks = config
        .runbooks
        .values()
        .map(|b| {
            let v = engine::present::runbook(b);
            RunbookEntry {
                name: v.name,
                description: v.description,
                steps: v
                    .steps
                    .iter()
                    .map(|s| {
                        let what = s.action.as_deref().or(s.prompt.as_deref()).unwrap_or("");
                        format!("{} ({}): {what}", s.id, s.kind)
                    })
                    .collect(),
            }
        })
        .collect();
    let page = portal
        .engine
        .list_runs(&viewer.actor, false, None, None, RECENT_RUNS)
        .await
        .map_err(|e| fail(&viewer, e))?;
    let runs = page
        .items
        .iter()
        .map(|r| {
            let v = engine::present::run(r, &config);
            RunRow {
                badge: badge(&v.state),
                id: v.id,
                runbook: v.runbook,
                state: v.state,
                step: v.current_step.unwrap_or_else(|| "-".into()),
                created: v.created_at,
            }
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &RunbooksPage {
            layout: Layout::new("Runbooks", Some(&viewer)),
            runbooks,
            runs,
        },
    ))
}

pub(crate) async fn start(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(name): Path<String>,
    uri: Uri,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    match portal
        .engine
        .start_run(&viewer.actor, &name, Default::default())
        .await
    {
        Ok(r) => Ok(back(&r.id)),
        Err(e) => Err(fail(&viewer, e)),
    }
}

struct StepRow {
    id: String,
    kind: String,
    status: String,
    badge: &'static str,
    current: bool,
    what: String,
    output: String,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    layout: Layout,
    run: proto::RunView,
    badge: &'static str,
    version: String,
    steps: Vec<StepRow>,
    /// The values the input offers, as text.
    choices: Vec<String>,
    /// The resource's durations, for the access form.
    durations: Vec<String>,
    mine: bool,
    can_ask: bool,
    can_resume: bool,
    can_cancel: bool,
    /// While the run moves on its own, the page reloads itself.
    refresh: bool,
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

pub(crate) async fn run_page(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let r = portal
        .engine
        .run(&viewer.actor, &id)
        .await
        .map_err(|e| fail(&viewer, e))?;
    let config = portal.engine.config();
    let v = engine::present::run(&r, &config);
    let mine = v.runner == viewer.actor.id;
    let durations = v
        .needs_access
        .as_ref()
        .and_then(|a| config.resources.get(&a.resource))
        .map(|res| {
            let api = api::convert::resource(res, &config.directory, &viewer.actor.id);
            if api.durations.is_empty() {
                vec![api.default_duration]
            } else {
                api.durations
            }
        })
        .unwrap_or_default();
    let steps = v
        .steps
        .iter()
        .map(|s| StepRow {
            id: s.id.clone(),
            kind: s.kind.clone(),
            badge: match s.status.as_str() {
                "done" => "badge ok",
                "current" => "badge wait",
                _ => "badge off",
            },
            status: s.status.clone(),
            current: s.status == "current",
            what: s
                .action
                .clone()
                .or_else(|| s.prompt.clone())
                .unwrap_or_default(),
            output: s.output.as_ref().map(text).unwrap_or_default(),
        })
        .collect();
    let choices = v
        .input
        .as_ref()
        .and_then(|i| i.possible_values.as_ref())
        .map(|p| p.iter().map(text).collect())
        .unwrap_or_default();
    let page = RunPage {
        layout: Layout::new(format!("Run of {}", v.runbook), Some(&viewer)),
        badge: badge(&v.state),
        version: v.version.get(..12).unwrap_or(&v.version).to_owned(),
        steps,
        choices,
        durations,
        mine,
        can_ask: mine && v.state == "needs_access",
        can_resume: mine && v.state == "ready_to_resume",
        can_cancel: (mine || viewer.actor.admin)
            && !matches!(v.state.as_str(), "succeeded" | "failed" | "cancelled"),
        refresh: matches!(v.state.as_str(), "running" | "waiting_for_approval"),
        run: v,
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub(crate) struct InputForm {
    value: String,
    /// The step the page asked: a stale page never answers a later one.
    #[serde(default)]
    step: String,
}

pub(crate) async fn input(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
    Form(f): Form<InputForm>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let value = serde_json::Value::String(f.value);
    match portal
        .engine
        .answer_run(&viewer.actor, &id, optional(&f.step), value)
        .await
    {
        Ok(r) => Ok(back(&r.id)),
        Err(e) => Err(fail(&viewer, e)),
    }
}

#[derive(Deserialize)]
pub(crate) struct AccessForm {
    reason: String,
    #[serde(default)]
    duration: String,
}

pub(crate) async fn access(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
    Form(f): Form<AccessForm>,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    let duration = match optional(&f.duration).map(|d| domain::Span::parse(&d)) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            let e = domain::DomainError::Invalid(format!("duration: {e}"));
            return Err(fail(&viewer, e.into()));
        }
    };
    match portal
        .engine
        .request_run_access(&viewer.actor, &id, f.reason, duration)
        .await
    {
        Ok((r, _)) => Ok(back(&r.id)),
        Err(e) => Err(fail(&viewer, e)),
    }
}

pub(crate) async fn resume(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    match portal.engine.resume_run(&viewer.actor, &id).await {
        Ok(r) => Ok(back(&r.id)),
        Err(e) => Err(fail(&viewer, e)),
    }
}

pub(crate) async fn cancel(
    State(portal): State<Portal>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
    uri: Uri,
) -> Page {
    let viewer = signed_in(&portal, &current, &uri)?;
    match portal.engine.cancel_run(&viewer.actor, &id, None).await {
        Ok(r) => Ok(back(&r.id)),
        Err(e) => Err(fail(&viewer, e)),
    }
}

/// The run's page (run ids are UUIDs: nothing to escape).
fn back(id: &str) -> Response {
    see_other(&format!("/runs/{id}"))
}
