//! The error vocabulary of the API: slugs and field errors.
//!
//! Every layer reports problems with a client's request as [`FieldError`]s so that all of them
//! can be returned at once. Which HTTP status a slug means is decided in one place only, the
//! `billing-http` crate.

use serde::Serialize;

/// The machine-readable kind of an error, as listed in the API contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Slug {
    /// The input cannot be read: not JSON, wrong type, malformed id (400).
    InvalidFormat,
    /// A required input is absent (400).
    Missing,
    /// The input is readable but not allowed (400).
    InvalidValue,
    /// No or invalid credentials (401).
    Unauthorized,
    /// The caller may not do this (403).
    AccessDenied,
    /// No such resource, or none the caller may see (404).
    NotFound,
    /// The client accepts no JSON (406).
    NotAcceptable,
    /// The request conflicts with the resource's state (409).
    Conflict,
    /// `If-Match` names another version (412).
    PreconditionFailed,
    /// The body is over the limit (413).
    TooLarge,
    /// The body is not JSON (or not a form, for pages) (415).
    UnsupportedMediaType,
    /// Stripe, the store or mail failed; nothing changed (502).
    UpstreamUnavailable,
    /// A defect on our side, logged (500).
    ActOfGod,
    /// A realm asked for by a server other than the one it is registered to.
    RemoteRealmServerMismatch,
    /// A deactivated remote server calling.
    ServerDeactivated,
    /// A rate limit was reached (429).
    TooManyRequests,
    /// An `Idempotency-Key` seen before with another request (422).
    IdempotencyKeyReused,
    /// A change that charges at once was declined by the card; nothing changed (402).
    CardDeclined,
}

impl Slug {
    /// The slug as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Slug::InvalidFormat => "invalid_format",
            Slug::Missing => "missing",
            Slug::InvalidValue => "invalid_value",
            Slug::Unauthorized => "unauthorized",
            Slug::AccessDenied => "access_denied",
            Slug::NotFound => "not_found",
            Slug::NotAcceptable => "not_acceptable",
            Slug::Conflict => "conflict",
            Slug::PreconditionFailed => "precondition_failed",
            Slug::TooLarge => "too_large",
            Slug::UnsupportedMediaType => "unsupported_media_type",
            Slug::UpstreamUnavailable => "upstream_unavailable",
            Slug::ActOfGod => "act_of_god",
            Slug::RemoteRealmServerMismatch => "remote_realm_server_mismatch",
            Slug::ServerDeactivated => "server_deactivated",
            Slug::TooManyRequests => "too_many_requests",
            Slug::IdempotencyKeyReused => "idempotency_key_reused",
            Slug::CardDeclined => "card_declined",
        }
    }
}

/// One problem with a request: what kind, where (a JSON pointer into the body, or the name of a
/// path or query parameter), and a sentence for the human reading it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// What kind of error.
    pub slug: Slug,
    /// The JSON pointer of the body field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The path parameter or header at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// A sentence for people.
    pub message: String,
}

impl FieldError {
    /// An error that concerns the request as a whole.
    pub fn general(slug: Slug, message: impl Into<String>) -> Self {
        FieldError {
            slug,
            field: None,
            param: None,
            message: message.into(),
        }
    }

    /// An error about one field of the body, `pointer` being its JSON pointer (`/plan`).
    pub fn field(slug: Slug, pointer: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            slug,
            field: Some(pointer.into()),
            param: None,
            message: message.into(),
        }
    }

    /// An error about a path or query parameter (or a header), named as the client sent it.
    pub fn param(slug: Slug, name: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            slug,
            field: None,
            param: Some(name.into()),
            message: message.into(),
        }
    }
}

/// Every problem found in one request, never just the first.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} problem(s) with the request", .0.len())]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// The slugs of every error, in order.
    pub fn slugs(&self) -> Vec<Slug> {
        self.0.iter().map(|e| e.slug).collect()
    }
}

impl From<FieldError> for ValidationErrors {
    fn from(error: FieldError) -> Self {
        ValidationErrors(vec![error])
    }
}

/// An error and every source beneath it, `: `-separated, for one log field. Errors keep their
/// sources (`#[source]`) rather than flattening them into strings; this is where they are read.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
