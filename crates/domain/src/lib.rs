//! The vocabulary of Countersign and the pure state machine of requests, steps, reviews and
//! grants.
//!
//! Everything here is deterministic: functions take the current time as a parameter and return
//! the next state together with the audit events and effects (schedule a timer, call a
//! connector, issue a grant) as data. The engine persists both in one transaction and workers
//! carry the effects out. This crate deliberately does no IO, never reads the clock, and knows
//! nothing of HTTP or SQL; its serde derives describe the *stored* snapshot of a request or
//! grant, not an API shape. The one JSON document it defines is the policy input (rule 29),
//! because policies are written against it.

pub mod action;
pub mod delivery;
pub mod effect;
pub mod error;
pub mod follow_up;
pub mod grant;
pub mod notify;
pub mod policy;
pub mod principal;
pub mod request;
pub mod resource;
pub mod run;
pub mod time;

pub use action::{Action, ActionInput};
pub use delivery::{Attempt, Callback, CallbackFormat, Delivery, DeliveryState, Notice, RetryPlan};
pub use effect::{Changes, Effect, Event, EventKind, TimerKind};
pub use error::DomainError;
pub use follow_up::{Closed, FollowUp, FollowUpState, Verdict};
pub use grant::{Grant, GrantEnd, GrantSpec, GrantState};
pub use policy::{Evaluation, NoPolicies, PolicyEval, Purpose, Trace};
pub use principal::{Actor, AppDef, Directory, Principal, UserDef};
pub use request::{
    Comment, Context, Decision, Escalated, NewRequest, Request, RequestState, Review, ReviewInput,
    Scope, StepState, StepStatus, parse_step_key, step_key,
};
pub use resource::{
    ActionDef, BreakGlassDef, Escalation, FieldDef, FieldType, FieldValue, Input, PolicyRef,
    ResourceDef, Reviewers, StepDef, Workflow,
};
pub use run::{Run, RunLink, RunState, RunbookStep};
pub use time::{Span, Timestamp};

/// Upper bounds on what a client may send, shared by every surface (PRODUCT.md §7).
pub mod limits {
    /// Longest accepted reason, comment or cancellation text, in characters.
    pub const MAX_TEXT: usize = 4096;
    /// Most fields a request may carry.
    pub const MAX_FIELDS: usize = 64;
    /// Longest accepted string field value, in characters.
    pub const MAX_FIELD_VALUE: usize = 4096;
    /// Most comments one request may collect.
    pub const MAX_COMMENTS: usize = 500;
    /// Most assignments one step may collect.
    pub const MAX_ASSIGNMENTS: usize = 20;
    /// Longest accepted `purpose` (markdown), in characters.
    pub const MAX_PURPOSE: usize = 16 * 1024;
    /// Longest accepted `reference_url` and `correlation_id`, in characters.
    pub const MAX_REFERENCE: usize = 2048;
    /// Largest accepted `request_data`, as compact JSON, in bytes.
    pub const MAX_REQUEST_DATA: usize = 16 * 1024;
    /// How far ahead a request may schedule its grant's start.
    pub const MAX_START_AHEAD: crate::Span = crate::Span::from_secs(30 * 24 * 3600);

    /// The rule for every free text a client sends (reasons, comments, purposes, string field
    /// values): at most `max` characters, and no control character other than newline and tab.
    /// C0 controls, DEL and C1 controls are refused because the text reaches reviewers'
    /// terminals and logs, where an escape sequence could draw a fake line or write the
    /// clipboard (hardening item 6). The error names the first such character.
    pub fn text(what: &str, text: &str, max: usize) -> Result<(), String> {
        if text.chars().count() > max {
            return Err(format!("{what} is longer than {max} characters"));
        }
        match text.chars().find(|&c| forbidden_control(c)) {
            Some(c) => Err(format!(
                "{what} contains the control character U+{:04X}; only newline and tab are accepted",
                u32::from(c)
            )),
            None => Ok(()),
        }
    }

    /// A C0 control other than newline and tab, DEL, or a C1 control.
    pub fn forbidden_control(c: char) -> bool {
        c.is_control() && c != '\n' && c != '\t'
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn hardening_6_text_refuses_escapes_and_keeps_newline_and_tab() {
            assert_eq!(text("reason", "two\nlines\tand a tab", 100), Ok(()));
            for bad in [
                "\u{1b}[2Kstate approved",
                "\u{9b}2K",
                "\r",
                "\u{7f}",
                "nul\0",
                "\u{85}",
            ] {
                let err = text("reason", bad, 100).unwrap_err();
                assert!(
                    err.starts_with("reason contains the control character U+"),
                    "{err}"
                );
            }
            assert_eq!(
                text("comment", "12345", 4),
                Err("comment is longer than 4 characters".into())
            );
            // Printable non-ASCII text is fine.
            assert_eq!(text("reason", "café ✓ 日本", 100), Ok(()));
        }
    }
}
