//! The `/v1/runbooks` and `/v1/runs` handlers (issue 17): the runbook catalog, and runs that
//! only their runner may answer, ask access for, resume or cancel (an admin may cancel and
//! read any). Someone else's run is 404, as if it did not exist.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use domain::{RunState, Span};
use proto::*;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::routes::{Body, with_grant};
use crate::{ApiError, AppState, Auth, cursor};

type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    crate::openapi_router()
        .routes(routes!(list_runbooks))
        .routes(routes!(start_run, list_runs))
        .routes(routes!(get_run))
        .routes(routes!(answer_run))
        .routes(routes!(request_access))
        .routes(routes!(resume_run))
        .routes(routes!(cancel_run))
}

fn view(state: &AppState, r: &domain::Run) -> RunView {
    engine::present::run(r, &state.engine.config())
}

/// The runbooks anyone signed in may run, sorted by name.
#[utoipa::path(get, path = "/v1/runbooks", tag = "runs",
    responses((status = 200, description = "Every configured runbook, with its steps", body = RunbookList)))]
async fn list_runbooks(State(state): State<AppState>, Auth(_): Auth) -> Json<RunbookList> {
    let config = state.engine.config();
    Json(RunbookList {
        runbooks: config
            .runbooks
            .values()
            .map(engine::present::runbook)
            .collect(),
    })
}

/// Start a run of a runbook for the caller. It runs on the server's worker: read it back
/// with `GET /v1/runs/{id}` to follow it.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", request_body = CreateRunBody,
    responses((status = 201, description = "The run, `running`", body = RunView),
        (status = 403, description = "An application: a run is a person's", body = ErrorBody),
        (status = 422, description = "An unknown runbook, or inputs that name no input step or are of the wrong type", body = ErrorBody)))]
async fn start_run(
    State(state): State<AppState>,
    Auth(actor): Auth,
    body: Body<CreateRunBody>,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let Json(body) = body?;
    let run = state
        .engine
        .start_run(&actor, &body.runbook, body.inputs)
        .await?;
    Ok((StatusCode::CREATED, Json(view(&state, &run))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListRunsQuery {
    /// Only runs in this state.
    #[param(inline, value_type = Option<proto::RunState>)]
    state: Option<String>,
    /// `true`: every person's runs (admins only; for anyone else, their own).
    all: Option<bool>,
    /// 50 by default; larger values count as 200, and 0 as 1.
    #[param(format = Int64, minimum = 0, maximum = 4294967295.0)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page, to read the next one.
    #[param(schema_with = proto::schema::cursor)]
    cursor: Option<String>,
}

/// The caller's runs (or, for an admin with `all=true`, everyone's), newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(ListRunsQuery),
    responses((status = 200, description = "The runs, newest first", body = RunList),
        (status = 400, description = "An unknown state or a bad cursor", body = ErrorBody)))]
async fn list_runs(
    State(state): State<AppState>,
    Auth(actor): Auth,
    q: Result<Query<ListRunsQuery>, QueryRejection>,
) -> ApiResult<Json<RunList>> {
    let Query(q) = q?;
    let st = match q.state.as_deref() {
        Some(s) => Some(
            RunState::parse(s)
                .ok_or_else(|| ApiError::malformed(format!("unknown run state {s:?}")))?,
        ),
        None => None,
    };
    let all = if q.all == Some(true) { "true" } else { "false" };
    let scope = cursor::Scope::new("runs", &actor.id)
        .filter("state", q.state.as_deref())
        .filter("all", Some(all));
    let after = q.cursor.as_deref().map(|c| scope.position(c)).transpose()?;
    let page = state
        .engine
        .list_runs(
            &actor,
            q.all == Some(true),
            st,
            after,
            q.limit.unwrap_or(50),
        )
        .await?;
    Ok(Json(RunList {
        runs: page.items.iter().map(|r| view(&state, r)).collect(),
        next_cursor: page.next.as_ref().map(|p| scope.position_cursor(p)),
    }))
}

/// One run: its state, its timeline with each done step's output, the input it waits for,
/// or the access it stopped for and who can approve it.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, description = "The run", body = RunView),
        (status = 404, description = "No such run, or not the caller's", body = ErrorBody)))]
async fn get_run(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let run = state.engine.run(&actor, &id).await?;
    Ok(Json(view(&state, &run)))
}

/// Answer the input step the run waits at (its runner only).
#[utoipa::path(post, path = "/v1/runs/{id}/input", tag = "runs", params(("id" = String, Path)),
    request_body = RunInputBody,
    responses((status = 200, description = "The run, going on", body = RunView),
        (status = 404, description = "No such run, or not the caller's", body = ErrorBody),
        (status = 409, description = "The run does not wait for an input", body = ErrorBody),
        (status = 422, description = "A value of the wrong type, or not one of those offered", body = ErrorBody)))]
async fn answer_run(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: Body<RunInputBody>,
) -> ApiResult<Json<RunView>> {
    let Json(body) = body?;
    let run = state
        .engine
        .answer_run(&actor, &id, None, body.value)
        .await?;
    Ok(Json(view(&state, &run)))
}

/// Ask for the access the run stopped for (its runner only): an ordinary request for the
/// action's resource, through its workflow, linked to the run and the step.
#[utoipa::path(post, path = "/v1/runs/{id}/access", tag = "runs", params(("id" = String, Path)),
    request_body = RunAccessBody,
    responses((status = 201, description = "The run, waiting for approval, and the request", body = RunAccessView),
        (status = 404, description = "No such run, or not the caller's", body = ErrorBody),
        (status = 409, description = "The run does not need access", body = ErrorBody),
        (status = 422, description = "An empty reason, a bad duration, or no reviewer but the runner", body = ErrorBody)))]
async fn request_access(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: Body<RunAccessBody>,
) -> ApiResult<(StatusCode, Json<RunAccessView>)> {
    let Json(body) = body?;
    let duration = body
        .duration
        .as_deref()
        .map(Span::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("duration: {e}")))?;
    let (run, created) = state
        .engine
        .request_run_access(&actor, &id, body.reason, duration)
        .await?;
    let request = with_grant(&state, &actor, &created.request).await?;
    Ok((
        StatusCode::CREATED,
        Json(RunAccessView {
            run: view(&state, &run),
            request,
        }),
    ))
}

/// Resume a run stopped at an action (its runner only, rule 37): the action's grant is
/// checked again, and the run goes on from the step where it stopped.
#[utoipa::path(post, path = "/v1/runs/{id}/resume", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, description = "The run, `running`", body = RunView),
        (status = 404, description = "No such run, or not the caller's", body = ErrorBody),
        (status = 409, description = "The run is not stopped at an action, or still waits for approval", body = ErrorBody)))]
async fn resume_run(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let run = state.engine.resume_run(&actor, &id).await?;
    Ok(Json(view(&state, &run)))
}

/// Cancel a run (its runner, or an admin). An action running now finishes, and its result is
/// not recorded.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)),
    request_body = ReasonBody,
    responses((status = 200, description = "The run, `cancelled`", body = RunView),
        (status = 404, description = "No such run, or not the caller's", body = ErrorBody),
        (status = 409, description = "The run has ended", body = ErrorBody),
        (status = 422, description = "A reason that is too long", body = ErrorBody)))]
async fn cancel_run(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    body: Body<ReasonBody>,
) -> ApiResult<Json<RunView>> {
    let Json(body) = body?;
    let run = state.engine.cancel_run(&actor, &id, body.reason).await?;
    Ok(Json(view(&state, &run)))
}
