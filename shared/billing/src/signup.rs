//! Signup events: the auth service's "profile created" messages on the signup queue.
//!
//! ```json
//! {"type": "profile.created", "event_id": "<uuid>", "user_id": "<uuid>",
//!  "email": "ada@example.com", "created_at": "2026-11-21T10:00:00Z"}
//! ```
//!
//! Reading one tells the consumer whether it is a profile to provision, a type to acknowledge
//! and ignore, or a message that can never succeed (poison) and why.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::ids::parse_canonical_uuid;

/// The `type` of the events this service provisions from.
pub const PROFILE_CREATED: &str = "profile.created";

/// A profile to give a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileCreated {
    /// The auth service's id of the event.
    pub event_id: Uuid,
    /// The new user.
    pub user_id: Uuid,
    /// The user's address.
    pub email: String,
    /// When the profile was created: the trial starts then.
    pub created_at: DateTime<Utc>,
}

impl ProfileCreated {
    /// When the trial starts: at signup, or now if the auth service's clock ran ahead.
    pub fn trial_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.created_at.min(now)
    }
}

/// What a message on the signup queue is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignupMessage {
    /// A new profile to provision.
    ProfileCreated(ProfileCreated),
    /// Another event type on the same queue: acknowledged, nothing done.
    Other(String),
}

/// Why a message can never be processed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("poison message: {0}")]
pub struct Poison(pub String);

/// Reads one message body.
pub fn parse(body: &str) -> Result<SignupMessage, Poison> {
    let value: Value = serde_json::from_str(body).map_err(|e| Poison(format!("not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(Poison("not a JSON object".into()));
    };
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Poison("no string `type`".into()))?;
    if kind != PROFILE_CREATED {
        return Ok(SignupMessage::Other(kind.to_owned()));
    }
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| Poison(format!("no string `{name}`")))
    };
    let uuid = |name: &str| {
        text(name).and_then(|t| parse_canonical_uuid(t).ok_or_else(|| Poison(format!("`{name}` is not a UUID"))))
    };
    let email = text("email")?;
    if !email.contains('@') || email.chars().any(char::is_whitespace) {
        return Err(Poison("`email` is not an email address".into()));
    }
    let created_at = DateTime::parse_from_rfc3339(text("created_at")?)
        .map_err(|_| Poison("`created_at` is not an RFC 3339 timestamp".into()))?
        .with_timezone(&Utc);
    Ok(SignupMessage::ProfileCreated(ProfileCreated {
        event_id: uuid("event_id")?,
        user_id: uuid("user_id")?,
        email: email.to_owned(),
        created_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"type": "profile.created", "event_id": "5f0c6a3e-2b1d-4c9e-8f7a-6d5e4c3b2a19",
        "user_id": "0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b", "email": "ada@example.com", "created_at": "2026-11-21T10:00:00Z"}"#;

    #[test]
    fn profile_created_is_read_whole() {
        let SignupMessage::ProfileCreated(profile) = parse(GOOD).unwrap() else {
            panic!()
        };
        assert_eq!(profile.user_id.to_string(), "0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b");
        assert_eq!(profile.email, "ada@example.com");
        assert_eq!(profile.created_at.to_rfc3339(), "2026-11-21T10:00:00+00:00");
    }

    #[test]
    fn other_types_are_acknowledged_not_poison() {
        assert_eq!(
            parse(r#"{"type": "profile.deleted", "user_id": 3}"#),
            Ok(SignupMessage::Other("profile.deleted".into()))
        );
    }

    #[test]
    fn malformed_messages_are_poison() {
        for body in [
            "not json",
            "[]",
            r#"{"event_id": "x"}"#,
            &GOOD.replace("0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b", "user-1"),
            &GOOD.replace("ada@example.com", "ada"),
            &GOOD.replace("2026-11-21T10:00:00Z", "yesterday"),
            &GOOD.replace(r#""type": "profile.created""#, r#""type": 7"#),
        ] {
            assert!(parse(body).is_err(), "{body}");
        }
    }

    #[test]
    fn trial_starts_at_signup_or_now_if_signup_is_in_the_future() {
        let SignupMessage::ProfileCreated(profile) = parse(GOOD).unwrap() else {
            panic!()
        };
        let before = profile.created_at - chrono::Duration::hours(1);
        let after = profile.created_at + chrono::Duration::hours(1);
        assert_eq!(profile.trial_start(after), profile.created_at);
        assert_eq!(profile.trial_start(before), before);
    }
}
