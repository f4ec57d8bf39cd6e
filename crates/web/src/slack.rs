//! `/slack/events`: the one endpoint Slack's requests come to in HTTP mode (issue 16): slash
//! commands and interactivity (button clicks, modal submissions).
//!
//! Every request is verified first (rule 35): its `X-Slack-Signature` over the exact bytes
//! and its timestamp, before anything of the body is parsed. A Slack user then acts only as
//! the Countersign user it is linked to, through the same engine services as the portal and
//! the API, so every rule holds as it does there.
//!
//! Every click, command and submission is stored before it is acknowledged
//! ([`engine::interactions`]): a second delivery of one is acknowledged and not acted on
//! again, and one whose process died before acting on it is replayed by another ([`replay`]).
//! A click is then acknowledged at once and acted on afterwards (a modal opened, or a refusal
//! said to the clicker alone), well inside Slack's three seconds. A modal's submission is
//! the decision itself: the engine records it before Slack gets its answer, so that a refusal
//! shows in the modal and an acknowledged decision is already stored.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use domain::{Actor, Decision, ReviewInput, Scope, Span};
use engine::slack::{
    self as app, APPROVE, APPROVE_MODAL, ASSIGN, ASSIGN_MODAL, COMMENT, COMMENT_MODAL, DENY,
    DENY_MODAL, DROP, EXTEND, EXTEND_MODAL, NOT_NOW, PICK_MODAL, REQUEST_MODAL, RESUME, RUN_INPUT,
};
use engine::{Engine, EngineError, interactions};
use serde_json::{Value, json};

/// The Slack endpoint, without the portal's session and CSRF layer: Slack signs its
/// requests instead. It also installs the engine's replayer of stored interactions.
pub fn router(engine: Arc<Engine>) -> Router {
    engine.set_slack_replayer(Arc::new(|engine, stored| Box::pin(replay(engine, stored))));
    Router::new()
        .route("/slack/events", post(events))
        .layer(DefaultBodyLimit::max(app::MAX_BODY))
        .with_state(engine)
}

/// What Slack gets back: a JSON body, or nothing (an empty 200). The same answer goes over
/// HTTP or, in Socket Mode, as the envelope's acknowledgement.
pub(crate) type Answer = Option<Value>;

fn respond(answer: Answer) -> Response {
    match answer {
        Some(v) => axum::Json(v).into_response(),
        None => StatusCode::OK.into_response(),
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn events(State(engine): State<Arc<Engine>>, headers: HeaderMap, body: Bytes) -> Response {
    let config = engine.config();
    let Some((_, ch)) = config.slack() else {
        return refuse(StatusCode::NOT_FOUND, "no slack channel is configured");
    };
    if ch.mode != config::SlackMode::Http {
        return refuse(
            StatusCode::NOT_FOUND,
            "this server takes Slack's requests over Socket Mode",
        );
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(why) = app::verify_signature(
        &ch.signing_secret,
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &body,
        engine.now(),
    ) {
        tracing::info!(%why, "a request to /slack/events was refused");
        return refuse(StatusCode::UNAUTHORIZED, &why.to_string());
    }
    // The Events API's one-time URL check (JSON); everything else is a form.
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        if v["type"] == "url_verification"
            && let Some(c) = v["challenge"].as_str()
        {
            return axum::Json(json!({ "challenge": c })).into_response();
        }
        return refuse(StatusCode::BAD_REQUEST, "events are not subscribed to");
    }
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "the body is not a form");
    };
    let field = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    // Either transport's shape: an interaction's payload, or a command's fields as an object
    // (as Socket Mode delivers them).
    let (kind, payload) = if let Some(payload) = field("payload") {
        match serde_json::from_str::<Value>(payload) {
            Ok(p) if p.is_object() => (INTERACTIVE, p),
            _ => return refuse(StatusCode::BAD_REQUEST, "payload is not a JSON object"),
        }
    } else if field("command").is_some() && field("user_id").is_some() {
        let fields: serde_json::Map<String, Value> = form
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        (COMMANDS, Value::Object(fields))
    } else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "neither a slash command nor an interaction",
        );
    };
    match handle(&engine, kind, payload).await {
        Ok(answer) => respond(answer),
        Err(Unstored) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "Countersign could not record this interaction, so nothing was done; try again",
        ),
    }
}

/// Socket Mode's names of the two kinds of request the app takes, used for HTTP's too.
const INTERACTIVE: &str = "interactive";
const COMMANDS: &str = "slash_commands";

/// An interaction could not be stored: Slack is told it failed (HTTP 503; in Socket Mode the
/// envelope is not acknowledged) and nothing was done.
pub(crate) struct Unstored;

/// Work left after Slack's answer: opening a modal, or saying a refusal.
type Then = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What handling an interaction gives: Slack's answer, and what to do once it is sent.
struct Handled {
    answer: Answer,
    then: Option<Then>,
}

impl From<Answer> for Handled {
    fn from(answer: Answer) -> Handled {
        Handled { answer, then: None }
    }
}

/// One request from Slack, from either transport (rule 35): stored under its key, then
/// answered and acted on, or, if it was stored already (Slack delivered it again), answered
/// with nothing and not acted on. A suggestion (an external select's options) is only a read
/// and is answered without being stored.
pub(crate) async fn handle(
    engine: &Arc<Engine>,
    kind: &str,
    payload: Value,
) -> Result<Answer, Unstored> {
    if kind == INTERACTIVE && payload["type"] == "block_suggestion" {
        let user = payload["user"]["id"].as_str().unwrap_or_default();
        return Ok(suggest(engine, user, &payload).await);
    }
    if kind != INTERACTIVE && kind != COMMANDS {
        return Ok(None);
    }
    let key = interactions::key(&payload);
    // Kept without what would let a reader of the database act in Slack: the legacy
    // verification token and the response URLs (each lets anyone post for 30 minutes).
    let mut kept = payload.clone();
    if let Some(m) = kept.as_object_mut() {
        for secret in ["token", "response_url", "response_urls"] {
            m.remove(secret);
        }
    }
    let stored = json!({ "kind": kind, "payload": kept });
    let held = match engine.slack_store(&key, &stored).await {
        Ok(Some(held)) => held,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "a Slack interaction could not be stored");
            return Err(Unstored);
        }
    };
    let handled = if kind == COMMANDS {
        command(engine.clone(), Command::of(&payload)).await
    } else {
        interaction(engine.clone(), payload).await
    };
    // If this handler is dropped before it acts (Slack hung up) or panics, `held` goes with
    // it, and the interaction is replayed once its claim lapses.
    let acted = held.acted();
    match handled.then {
        Some(then) => {
            tokio::spawn(async move {
                then.await;
                acted.await;
            });
        }
        None => acted.await,
    }
    Ok(handled.answer)
}

/// Acts on an interaction stored by a process that died before it had (the worker calls this
/// on any replica once that process's claim lapsed). A decision, a request, a comment, a drop
/// or a command's answer is made now and said to the person in Slack; a modal can no longer
/// be opened (Slack's trigger lasts three seconds), so they are asked to click again.
async fn replay(engine: Arc<Engine>, stored: Value) {
    let payload = &stored["payload"];
    let user = payload["user"]["id"]
        .as_str()
        .or(payload["user_id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let channel = payload["channel"]["id"]
        .as_str()
        .or(payload["container"]["channel_id"].as_str())
        .or(payload["channel_id"].as_str())
        .unwrap_or_default()
        .to_owned();
    const AGAIN: &str = "Countersign was interrupted before it could open the form you asked for; please ask again.";
    let said = if stored["kind"] == COMMANDS {
        let c = Command::of(payload);
        match c.text.trim() {
            "" | "request" => Some(AGAIN.to_owned()),
            _ => command(engine.clone(), c)
                .await
                .answer
                .and_then(|a| a["text"].as_str().map(str::to_owned)),
        }
    } else {
        match payload["type"].as_str() {
            Some("block_actions") => match click_of(payload) {
                // Acts, not a form: done again from the stored click. (A Resume is not: the
                // runner chooses again, rule 37.)
                Some(c) if c.action == DROP => {
                    clicked(&engine, c).await;
                    None
                }
                Some(_) => Some(AGAIN.to_owned()),
                None => None,
            },
            Some("view_submission") => {
                let what = match submitted(&engine, &user, &payload["view"]).await {
                    None => "was recorded".to_owned(),
                    Some(a) if a["response_action"] == "errors" => {
                        let why = a["errors"]
                            .as_object()
                            .and_then(|e| e.values().next())
                            .and_then(Value::as_str)
                            .unwrap_or("it was refused");
                        format!("could not be recorded: {why}")
                    }
                    Some(_) => {
                        return say(&engine, &channel, &user, AGAIN).await;
                    }
                };
                Some(format!(
                    "Countersign was interrupted while it took what you submitted in Slack; it {what}."
                ))
            }
            _ => None,
        }
    };
    if let Some(text) = said {
        say(&engine, &channel, &user, &text).await;
    }
}

/// Says `text` to one person: only to them in `channel`, or in their DM with the app when
/// there is no channel (a modal's submission).
async fn say(engine: &Engine, channel: &str, user: &str, text: &str) {
    let said = if channel.is_empty() {
        app::dm(engine, user, text).await
    } else {
        app::tell(engine, channel, user, text).await
    };
    if let Err(e) = said {
        tracing::warn!(error = %e, "a message could not be said in Slack");
    }
}

/// An answer only the person who typed the command sees.
fn ephemeral(text: &str) -> Answer {
    Some(json!({ "response_type": "ephemeral", "text": text }))
}

/// `/countersign` (the request modal), `/countersign link` and `/countersign help`.
/// A slash command: who typed it (their id, and the name Slack gives, shown on the link
/// page), what they typed after `/countersign`, and the trigger a modal opens with.
struct Command {
    user: String,
    name: String,
    text: String,
    trigger: String,
}

impl Command {
    /// A command's fields, from either transport.
    fn of(payload: &Value) -> Command {
        let field = |k: &str| payload[k].as_str().unwrap_or_default().to_owned();
        Command {
            user: field("user_id"),
            name: field("user_name"),
            text: field("text"),
            trigger: field("trigger_id"),
        }
    }
}

/// `/countersign` (the request modal), `/countersign link` and `/countersign help`.
async fn command(engine: Arc<Engine>, c: Command) -> Handled {
    let Command {
        user,
        name,
        text,
        trigger,
    } = c;
    let user = user.as_str();
    if user.is_empty() {
        return None.into();
    }
    let answer = match text.trim() {
        "" | "request" => {
            if let Err(why) = linked(&engine, user).await {
                return ephemeral(&why).into();
            }
            // Acknowledged now; the catalog follows.
            return Handled {
                answer: None,
                then: Some(Box::pin(async move {
                    let view = app::pick_modal(&engine.config());
                    if let Err(e) = app::open_modal(&engine, &trigger, view).await {
                        tracing::warn!(error = %e, "the request modal could not be opened");
                    }
                })),
            };
        }
        "unlink" => match engine.unlink_slack(user).await {
            Ok(Some(person)) => ephemeral(&format!(
                "Your Slack account no longer acts as {person} in Countersign."
            )),
            Ok(None) => ephemeral("Your Slack account is not linked to a Countersign user."),
            Err(e) => ephemeral(&refusal(&e)),
        },
        "link" => match engine.start_slack_link(user, &name).await {
            Ok(secret) => {
                let url = format!(
                    "{}/slack/link/{secret}",
                    engine.config().server.public_url.trim_end_matches('/')
                );
                ephemeral(&format!(
                    "Open <{url}|this link> within 10 minutes, signed in to Countersign, to act as yourself from Slack. It works once."
                ))
            }
            Err(e) => ephemeral(&refusal(&e)),
        },
        _ => ephemeral(
            "`/countersign` asks for access. `/countersign link` links your Slack account to your Countersign user, so that you can ask, approve and deny from Slack; `/countersign unlink` removes the link.",
        ),
    };
    answer.into()
}

/// What a refusal says, without storage details.
fn refusal(e: &EngineError) -> String {
    match e {
        EngineError::Store(err) => {
            tracing::error!(error = %err, "storage failure");
            "Countersign could not complete that; nothing was changed. Try again.".into()
        }
        other => other.to_string(),
    }
}

const PORTAL_ONLY: &str =
    "This step of the request is decided in the portal only; open it with View.";

const NOT_LINKED: &str = "Your Slack account is not linked to a Countersign user, so nothing was done. Type /countersign link first.";

async fn interaction(engine: Arc<Engine>, p: Value) -> Handled {
    match p["type"].as_str() {
        Some("block_actions") => match click_of(&p) {
            // Acknowledged now; the modal (or the refusal) follows.
            Some(click) => Handled {
                answer: None,
                then: Some(Box::pin(async move { clicked(&engine, click).await })),
            },
            None => None.into(),
        },
        Some("view_submission") => {
            let user = p["user"]["id"].as_str().unwrap_or_default();
            submitted(&engine, user, &p["view"]).await.into()
        }
        _ => None.into(),
    }
}

/// A click on one of the app's buttons, or `None` for anything else.
fn click_of(p: &Value) -> Option<Click> {
    let action = p["actions"][0]["action_id"].as_str().unwrap_or_default();
    if ![
        APPROVE, DENY, ASSIGN, COMMENT, EXTEND, DROP, RESUME, NOT_NOW, RUN_INPUT,
    ]
    .contains(&action)
    {
        return None;
    }
    let a = &p["actions"][0];
    // A select names its run and step in its block, and carries the option chosen.
    let (target, chosen) = if action == RUN_INPUT {
        (&a["block_id"], a["selected_option"]["value"].as_str())
    } else {
        (&a["value"], None)
    };
    Some(Click {
        user: p["user"]["id"].as_str().unwrap_or_default().to_owned(),
        action: action.to_owned(),
        request: target.as_str().unwrap_or_default().to_owned(),
        chosen: chosen.map(str::to_owned),
        trigger: p["trigger_id"].as_str().unwrap_or_default().to_owned(),
        channel: p["channel"]["id"]
            .as_str()
            .or(p["container"]["channel_id"].as_str())
            .unwrap_or_default()
            .to_owned(),
    })
}

/// A click on one of the app's buttons or selects.
struct Click {
    user: String,
    action: String,
    /// The button's value: a request, a grant, or a run and its step.
    request: String,
    /// The option a select's click chose.
    chosen: Option<String>,
    trigger: String,
    channel: String,
}

async fn clicked(engine: &Engine, c: Click) {
    let said = match open_for(engine, &c).await {
        Ok(()) => return,
        Err(why) => why,
    };
    if let Err(e) = app::tell(engine, &c.channel, &c.user, &said).await {
        tracing::warn!(error = %e, "a refusal could not be said in Slack");
    }
}

/// Opens the approve or deny modal if the clicker may decide the request now; otherwise
/// says why not.
async fn open_for(engine: &Engine, c: &Click) -> Result<(), String> {
    let actor = linked(engine, &c.user).await?;
    // A grant's buttons (the requester's DM before it ends): the value is the grant.
    if c.action == DROP {
        let g = engine
            .revoke_grant(&actor, &c.request, None)
            .await
            .map_err(|e| refusal(&e))?;
        return Err(format!("Your access to {} was dropped.", g.spec.resource));
    }
    // A run's buttons (the runner's DM when its access is in effect): the value is the run.
    if c.action == RESUME {
        // `<run>/<step>`: only the stop the message was about.
        let (id, step) = c.request.split_once('/').unwrap_or((&c.request, ""));
        let run = engine.run(&actor, id).await.map_err(|e| refusal(&e))?;
        let here = run.blocked.as_ref().map(|b| b.step.as_str());
        if run.state != domain::RunState::ReadyToResume || here != Some(step) {
            return Err(format!(
                "Run {} is not waiting to resume at step {step} any more: it is {}.",
                run.id,
                run.state.as_str()
            ));
        }
        let run = engine
            .resume_run(&actor, id)
            .await
            .map_err(|e| refusal(&e))?;
        return Err(format!("Run {} of {} resumed.", run.id, run.runbook));
    }
    if c.action == RUN_INPUT {
        // `<run>/<step>`: only the step the message asked.
        let (id, step) = c.request.split_once('/').unwrap_or((&c.request, ""));
        let value = c.chosen.clone().unwrap_or_default();
        // The step is checked again in the answer's own transaction.
        let run = engine.run(&actor, id).await.map_err(|e| refusal(&e))?;
        let here = run.current().map(|s| s.id.as_str());
        if run.state != domain::RunState::WaitingForInput || here != Some(step) {
            return Err(format!(
                "Run {} does not wait for step {step} any more: it is {}.",
                run.id,
                run.state.as_str()
            ));
        }
        engine
            .answer_run(
                &actor,
                id,
                Some(step.to_owned()),
                Value::String(value.clone()),
            )
            .await
            .map_err(|e| refusal(&e))?;
        return Err(format!("Step {step} of run {id} answered: {value}."));
    }
    if c.action == NOT_NOW {
        let run = engine
            .run(&actor, &c.request)
            .await
            .map_err(|e| refusal(&e))?;
        return Err(format!(
            "Run {} stays ready to resume: resume it from the portal or with `countersign run resume {}`.",
            run.id, run.id
        ));
    }
    if c.action == EXTEND {
        let g = engine
            .grant(&actor, &c.request)
            .await
            .map_err(|e| refusal(&e))?;
        return app::open_modal(engine, &c.trigger, app::extend_modal(&g, &engine.config())).await;
    }
    let r = engine
        .request(&actor, &c.request)
        .await
        .map_err(|e| refusal(&e))?;
    if c.action == COMMENT {
        if !engine::present::actions(&r, &actor).comment {
            return Err("You may not comment on this request.".into());
        }
        return app::open_modal(engine, &c.trigger, app::comment_modal(&r)).await;
    }
    if c.action == ASSIGN {
        if app::portal_only(&r) {
            return Err(PORTAL_ONLY.into());
        }
        // The engine says whether they may (rule 11) when the modal is submitted.
        return app::open_modal(engine, &c.trigger, app::assign_modal(&r)).await;
    }
    if app::portal_only(&r) {
        return Err(PORTAL_ONLY.into());
    }
    let may = engine::present::actions(&r, &actor);
    if !may.decide {
        let summary = engine::present::summary(&r);
        return Err(if r.state.is_terminal() {
            format!("This request is no longer pending: {}", summary.status)
        } else if may.decided {
            "You have already decided this request (one decision per person).".into()
        } else if r.requester == actor.id && !r.allow_self_approval {
            "You cannot decide your own request.".into()
        } else {
            format!(
                "You may not decide the current step of this request; it waits on {}.",
                summary.waiting_on.join(", ")
            )
        });
    }
    let view = if c.action == APPROVE {
        app::approve_modal(&r)
    } else {
        app::deny_modal(&r)
    };
    app::open_modal(engine, &c.trigger, view).await
}

/// The Countersign user a Slack account acts as, or why there is none.
async fn linked(engine: &Engine, account: &str) -> Result<Actor, String> {
    match app::actor_of(engine, account).await {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(NOT_LINKED.into()),
        Err(e) => Err(refusal(&e)),
    }
}

/// A modal's submission: the decision, made through the engine as the linked person. A
/// refusal is shown in the modal, under its comment.
async fn submitted(engine: &Engine, user: &str, view: &Value) -> Answer {
    let callback = view["callback_id"].as_str().unwrap_or_default();
    // Slack shows an error under one of the modal's input blocks.
    let block = match callback {
        ASSIGN_MODAL => "assignee",
        PICK_MODAL => "resource",
        REQUEST_MODAL | EXTEND_MODAL => "reason",
        _ => "comment",
    };
    let errors =
        |message: &str| Some(json!({ "response_action": "errors", "errors": { block: message } }));
    if ![
        APPROVE_MODAL,
        DENY_MODAL,
        ASSIGN_MODAL,
        COMMENT_MODAL,
        PICK_MODAL,
        REQUEST_MODAL,
        EXTEND_MODAL,
    ]
    .contains(&callback)
    {
        return None;
    }
    let actor = match linked(engine, user).await {
        Ok(a) => a,
        Err(why) => return errors(&why),
    };
    let id = view["private_metadata"].as_str().unwrap_or_default();
    if callback == COMMENT_MODAL {
        let text = view["state"]["values"]["comment"]["comment"]["value"]
            .as_str()
            .map(str::trim)
            .unwrap_or_default();
        if text.is_empty() {
            return errors("write a comment first");
        }
        return match engine.comment(&actor, id, text.to_owned()).await {
            Ok(_) => None,
            Err(e) => errors(&refusal(&e)),
        };
    }
    // Item 7, checked here as well as on the card: a step kept to the portal is never decided
    // nor handed on from Slack, whatever a modal says.
    if [ASSIGN_MODAL, APPROVE_MODAL, DENY_MODAL].contains(&callback) {
        match engine.request(&actor, id).await {
            Ok(r) if app::portal_only(&r) => return errors(PORTAL_ONLY),
            Ok(_) => {}
            Err(e) => return errors(&refusal(&e)),
        }
    }
    if callback == ASSIGN_MODAL {
        return assign(engine, &actor, id, view).await;
    }
    if callback == PICK_MODAL {
        let name = view["state"]["values"]["resource"]["resource"]["selected_option"]["value"]
            .as_str()
            .unwrap_or_default();
        let config = engine.config();
        return match config.resources.get(name).filter(|r| r.action.is_none()) {
            Some(r) => Some(json!({
                "response_action": "update",
                "view": app::request_modal(r, &config),
            })),
            None => Some(json!({ "response_action": "errors",
                "errors": { "resource": "choose a resource" } })),
        };
    }
    if callback == REQUEST_MODAL {
        return create(engine, &actor, view).await;
    }
    if callback == EXTEND_MODAL {
        let values = &view["state"]["values"];
        let reason = values["reason"]["reason"]["value"]
            .as_str()
            .unwrap_or_default();
        let duration = values["duration"]["duration"]["selected_option"]["value"]
            .as_str()
            .map(Span::parse)
            .transpose();
        let Ok(duration) = duration else {
            return errors("the duration is not one Countersign reads");
        };
        return match engine
            .extend_grant(&actor, id, duration, reason.trim().to_owned())
            .await
        {
            Ok(_) => None,
            Err(e) => Some(json!({ "response_action": "errors",
                "errors": { "reason": refusal(&e) } })),
        };
    }
    let decision = if callback == APPROVE_MODAL {
        Decision::Approve
    } else {
        Decision::Deny
    };
    let values = &view["state"]["values"];
    let comment = values["comment"]["comment"]["value"]
        .as_str()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let duration = match values["duration"]["duration"]["selected_option"]["value"].as_str() {
        Some(d) if decision == Decision::Approve => match Span::parse(d) {
            Ok(s) => Some(s),
            Err(e) => return errors(&format!("duration: {e}")),
        },
        None if decision == Decision::Approve => return errors("choose a duration"),
        _ => None,
    };
    let workflow = values["scope"]["scope"]["selected_options"]
        .as_array()
        .is_some_and(|o| o.iter().any(|x| x["value"] == "workflow"));
    let input = ReviewInput {
        decision,
        comment,
        duration,
        scope: if workflow {
            Scope::Workflow
        } else {
            Scope::Resource
        },
    };
    match engine.review(&actor, id, input).await {
        Ok(_) => None,
        Err(e) => errors(&refusal(&e)),
    }
}

/// The assign modal's submission: the Slack user picked must be linked; the engine decides
/// whether the submitter may assign the step (rule 11).
async fn assign(engine: &Engine, actor: &Actor, id: &str, view: &Value) -> Answer {
    let errors = |message: &str| {
        Some(json!({ "response_action": "errors", "errors": { "assignee": message } }))
    };
    let picked = view["state"]["values"]["assignee"]["assignee"]["selected_user"]
        .as_str()
        .unwrap_or_default();
    let person = match app::actor_of(engine, picked).await {
        Ok(Some(a)) => a.id,
        Ok(None) => {
            return errors(
                "That Slack user is not linked to a Countersign user; they can type /countersign link.",
            );
        }
        Err(e) => return errors(&refusal(&e)),
    };
    match engine
        .assign(actor, id, domain::Principal::User(person))
        .await
    {
        Ok(_) => None,
        Err(e) => errors(&refusal(&e)),
    }
}

/// The request modal's submission: a request made through the engine as the linked person.
/// A refusal is shown under the field it names, or under the reason.
async fn create(engine: &Engine, actor: &Actor, view: &Value) -> Answer {
    let config = engine.config();
    let name = view["private_metadata"].as_str().unwrap_or_default();
    let Some(r) = config.resources.get(name) else {
        return Some(json!({ "response_action": "errors",
            "errors": { "reason": format!("there is no resource called {name:?} any more") } }));
    };
    let values = &view["state"]["values"];
    let mut fields = std::collections::BTreeMap::new();
    for f in &r.fields {
        let v = &values[format!("field.{}", f.name)]["value"];
        let input = match &f.kind {
            domain::FieldType::Bool => Some(domain::Input::Bool(
                v["selected_options"]
                    .as_array()
                    .is_some_and(|o| !o.is_empty()),
            )),
            _ => v["selected_option"]["value"]
                .as_str()
                .or(v["value"].as_str())
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| domain::Input::Text(t.to_owned())),
        };
        if let Some(i) = input {
            fields.insert(f.name.clone(), i);
        }
    }
    let duration = values["duration"]["duration"]["selected_option"]["value"]
        .as_str()
        .or(values["duration"]["duration"]["value"].as_str())
        .map(|d| Span::parse(d.trim()));
    let duration = match duration.transpose() {
        Ok(d) => d,
        Err(e) => {
            return Some(json!({ "response_action": "errors",
                "errors": { "duration": e.to_string() } }));
        }
    };
    let input = engine::CreateRequest {
        resource: name.to_owned(),
        reason: values["reason"]["reason"]["value"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        duration,
        fields,
        start_at: None,
        requester: None,
        context: domain::Context::default(),
        // One request per modal, however often its submission is delivered or replayed.
        idempotency: view["id"]
            .as_str()
            .filter(|id| !id.is_empty() && id.len() <= 100)
            .map(|id| engine::IdempotencyKey {
                key: format!("slack:{id}"),
                body_hash: store::chain::sha256_hex(values.to_string().as_bytes()),
            }),
        break_glass: false,
        run: None,
        // An action (issue 18) is asked by the program that will run it, not from Slack.
        action: None,
    };
    match engine.create_request(actor, input).await {
        Ok(_) => None,
        Err(e) => {
            let message = refusal(&e);
            // Put the message under the field it names, if it names one.
            let block = r
                .fields
                .iter()
                .find(|f| message.contains(&format!("field {:?}", f.name)))
                .map_or_else(|| "reason".to_owned(), |f| format!("field.{}", f.name));
            Some(json!({ "response_action": "errors", "errors": { block: message } }))
        }
    }
}

/// An external select's options (`block_suggestion`): a dynamic field's choices from the same
/// options code as the portal, those containing what was typed, at most 100.
async fn suggest(engine: &Engine, user: &str, p: &Value) -> Answer {
    let empty = || Some(json!({ "options": [] }));
    if linked(engine, user).await.is_err() {
        return empty();
    }
    let resource = p["view"]["private_metadata"].as_str().unwrap_or_default();
    let Some(field) = p["block_id"]
        .as_str()
        .and_then(|b| b.strip_prefix("field."))
    else {
        return empty();
    };
    let typed = p["value"].as_str().unwrap_or_default().to_lowercase();
    let Ok(options) = engine.field_options(resource, field).await else {
        return empty();
    };
    let shown: Vec<Value> = options
        .into_iter()
        .filter(|o| typed.is_empty() || o.label.to_lowercase().contains(&typed))
        .take(100)
        .map(|o| {
            let label: String = o.label.chars().take(75).collect();
            json!({ "text": { "type": "plain_text", "text": label }, "value": o.value })
        })
        .collect();
    Some(json!({ "options": shown }))
}

/// Socket Mode (item 2): keeps a connection to Slack open while the configuration says
/// `mode = "socket"`, and answers each envelope as `/slack/events` answers the same request.
/// It reconnects at once when Slack asks (`disconnect`) or closes the connection, and after a
/// failure waits 2, 4, 8 … up to 30 seconds. Returns when `stop` says so, or when the
/// configuration no longer has a Socket Mode channel.
pub async fn run_socket(engine: Arc<Engine>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let config = engine.config();
        let Some((_, ch)) = config.slack() else {
            return;
        };
        let config::SlackMode::Socket { app_token } = &ch.mode else {
            return;
        };
        let served = match engine::socket::Socket::open(&engine, ch, app_token).await {
            Ok(socket) => {
                failures = 0;
                tracing::info!("connected to Slack (Socket Mode)");
                serve(&engine, socket, &mut stop).await
            }
            Err(e) => Err(e),
        };
        match served {
            Ok(Served::Stopped) => return,
            Ok(Served::Reconnect) => {}
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = std::time::Duration::from_secs(1 << failures.min(5))
                    .min(std::time::Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in = ?wait, "Slack's Socket Mode connection failed");
                tokio::select! {
                    _ = engine::clock::pause(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

enum Served {
    Stopped,
    Reconnect,
}

async fn serve(
    engine: &Arc<Engine>,
    mut socket: engine::socket::Socket,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Served, String> {
    use engine::socket::Incoming;
    loop {
        let incoming = tokio::select! {
            r = socket.next() => r?,
            _ = stop.changed() => {
                socket.close().await;
                return Ok(Served::Stopped);
            }
        };
        match incoming {
            Incoming::Envelope { id, kind, payload } => {
                // Unacknowledged when it could not be stored: Slack tells the user it failed.
                if let Ok(answer) = handle(engine, &kind, payload).await {
                    socket.ack(&id, answer).await?;
                }
            }
            Incoming::Reconnect => return Ok(Served::Reconnect),
            Incoming::Other => {}
        }
    }
}
