//! Schemas of the OpenAPI document that a derive cannot write with literals: free text with
//! its length bound and the control-character rule, durations, times, URLs and field values.
//!
//! The bounds repeat `domain::limits` (this crate does not depend on `domain`, so that the CLI
//! stays small); a test in `api` checks the document against those limits, so they cannot
//! drift apart. The server decides; these schemas only describe what it accepts.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::{KnownFormat, RefOr};

/// Longest reason, comment or cancellation text (`domain::limits::MAX_TEXT`).
pub const MAX_TEXT: usize = 4096;
/// Longest purpose (`domain::limits::MAX_PURPOSE`).
pub const MAX_PURPOSE: usize = 16 * 1024;
/// Longest `reference_url`, `correlation_id` or callback URL (`domain::limits::MAX_REFERENCE`).
pub const MAX_REFERENCE: usize = 2048;

/// Free text: any character but a control character other than newline and tab.
pub const TEXT_PATTERN: &str = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$";
/// Free text that is not empty or blank.
pub const NONEMPTY_TEXT_PATTERN: &str = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$";
/// An identifier kept as sent: no control character at all.
pub const REFERENCE_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";
/// An `http://` or `https://` URL with a host, without spaces or control characters.
pub const URL_PATTERN: &str =
    r"^https?://[^/ \u0000-\u001F\u007F-\u009F][^ \u0000-\u001F\u007F-\u009F]*$";
/// A principal as `Principal::parse` reads it: a user's email, `group:<name>` or `app:<name>`.
pub const PRINCIPAL_PATTERN: &str =
    r"^(group:[A-Za-z0-9_.@+-]+|app:[A-Za-z0-9_.@+-]+|[A-Za-z0-9_.+-]*@[A-Za-z0-9_.@+-]*)$";
/// A duration as `Span` writes it: `30s`, `15m`, `1h30m`, `7d`.
pub const SPAN_PATTERN: &str = r"^\s*([0-9]+[smhd])+\s*$";

/// The longest page cursor the server accepts.
pub const MAX_CURSOR: usize = 512;
/// A page cursor: URL-safe base64 without padding.
pub const CURSOR_PATTERN: &str = r"^[A-Za-z0-9_-]+$";

fn string(nullable: bool) -> ObjectBuilder {
    let ty = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new().schema_type(ty)
}

fn bounded(nullable: bool, pattern: &str, max: usize) -> Object {
    string(nullable)
        .pattern(Some(pattern))
        .max_length(Some(max))
        .build()
}

/// A reason or comment that may be empty.
pub fn text() -> Object {
    bounded(false, TEXT_PATTERN, MAX_TEXT)
}

/// A reason or comment that may be absent or null, and otherwise is `text`.
pub fn text_or_null() -> Object {
    bounded(true, TEXT_PATTERN, MAX_TEXT)
}

/// A reason or comment that must say something.
pub fn nonempty_text() -> Object {
    bounded(false, NONEMPTY_TEXT_PATTERN, MAX_TEXT)
}

/// `nonempty_text`, or null for "leave it as it is".
pub fn nonempty_text_or_null() -> Object {
    bounded(true, NONEMPTY_TEXT_PATTERN, MAX_TEXT)
}

/// A purpose, in markdown.
pub fn purpose_or_null() -> Object {
    bounded(true, TEXT_PATTERN, MAX_PURPOSE)
}

/// A new purpose: not blank.
pub fn nonempty_purpose_or_null() -> Object {
    bounded(true, NONEMPTY_TEXT_PATTERN, MAX_PURPOSE)
}

/// An identifier of the caller's, such as `correlation_id`.
pub fn reference_or_null() -> Object {
    bounded(true, REFERENCE_PATTERN, MAX_REFERENCE)
}

/// A callback URL.
pub fn url() -> Object {
    bounded(false, URL_PATTERN, MAX_REFERENCE)
}

/// A `reference_url`.
pub fn url_or_null() -> Object {
    bounded(true, URL_PATTERN, MAX_REFERENCE)
}

/// A page cursor, as a list's `next_cursor` gave it.
pub fn cursor() -> Object {
    string(false)
        .pattern(Some(CURSOR_PATTERN))
        .min_length(Some(1))
        .max_length(Some(MAX_CURSOR))
        .build()
}

/// A list's `next_cursor`: a cursor, or absent on the last page.
pub fn cursor_or_null() -> Object {
    string(true)
        .pattern(Some(CURSOR_PATTERN))
        .min_length(Some(1))
        .max_length(Some(MAX_CURSOR))
        .build()
}

/// A user, group or app.
pub fn principal() -> Object {
    string(false)
        .pattern(Some(PRINCIPAL_PATTERN))
        .min_length(Some(1))
        .max_length(Some(262))
        .build()
}

/// A duration, or null for the default.
pub fn span_or_null() -> Object {
    string(true).pattern(Some(SPAN_PATTERN)).build()
}

/// An RFC 3339 time, or null.
pub fn time_or_null() -> Object {
    string(true)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .build()
}

/// Groups or roles every reviewer must hold: at most 16, each 1 to 128 characters.
pub fn credentials() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .items(
            string(false)
                .min_length(Some(1))
                .max_length(Some(128))
                .pattern(Some(REFERENCE_PATTERN)),
        )
        .max_items(Some(16))
        .build()
}

/// One field value: a string, an integer or a boolean (durations and users are strings).
pub fn field_value() -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))),
            )
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .build(),
    )
}

/// Field name → value.
pub fn field_values() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(field_value()))))
        .build()
}
