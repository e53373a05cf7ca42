//! The fields of a [`SubscriptionChange`], in one table: each line says a field's name, who may
//! set it, how its JSON is read (by its type), and what it does to a subscription. Parsing,
//! the list of known fields, the system-controlled check and `apply` are all derived from this
//! table (the audit trail records what a write changed, field by field, from the subscription
//! before and after it: [`crate::store::AuditEntry::between`]), so adding a field is one line here
//! (and its member in `SubscriptionChange`).

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Status, Subscription, SubscriptionChange};
use crate::errors::Slug;
use crate::ids::parse_canonical_uuid;

/// Who may set a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The subscriber (and administrators).
    User,
    /// Only administrators and the system.
    System,
}

/// One field of the change table.
pub struct Field {
    /// The JSON member name.
    pub name: &'static str,
    /// The JSON pointer of the member.
    pub pointer: &'static str,
    /// Who may set it.
    pub owner: Owner,
    pub(super) read: fn(&Value, &mut SubscriptionChange) -> FieldOutcome<()>,
    pub(super) is_set: fn(&SubscriptionChange) -> bool,
    pub(super) apply: fn(&SubscriptionChange, &mut Subscription),
}

/// A field's value that cannot be read: the slug and a sentence.
pub(super) type FieldOutcome<T> = Result<T, (Slug, String)>;

/// How a value of each field type is read from JSON.
pub(super) trait FieldValue: Sized {
    fn read(value: &Value) -> FieldOutcome<Self>;
}

impl FieldValue for String {
    fn read(value: &Value) -> FieldOutcome<Self> {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or((Slug::InvalidFormat, "must be a string".to_owned()))
    }
}

impl FieldValue for bool {
    fn read(value: &Value) -> FieldOutcome<Self> {
        value
            .as_bool()
            .ok_or((Slug::InvalidFormat, "must be true or false".to_owned()))
    }
}

impl FieldValue for Uuid {
    fn read(value: &Value) -> FieldOutcome<Self> {
        value
            .as_str()
            .and_then(parse_canonical_uuid)
            .ok_or((Slug::InvalidFormat, "must be a lowercase hyphenated UUID".to_owned()))
    }
}

impl FieldValue for Status {
    fn read(value: &Value) -> FieldOutcome<Self> {
        let text = String::read(value)?;
        Status::parse(&text).ok_or_else(|| {
            let known: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
            (
                Slug::InvalidValue,
                format!("unknown status {text:?}; statuses are {}", known.join(", ")),
            )
        })
    }
}

impl FieldValue for DateTime<Utc> {
    fn read(value: &Value) -> FieldOutcome<Self> {
        value
            .as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or((Slug::InvalidFormat, "must be an RFC 3339 timestamp".to_owned()))
    }
}

impl FieldValue for u32 {
    fn read(value: &Value) -> FieldOutcome<Self> {
        if !value.is_number() {
            return Err((Slug::InvalidFormat, "must be a whole number".to_owned()));
        }
        value.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or((
            Slug::InvalidValue,
            "must be a whole number from 0 to 4294967295".to_owned(),
        ))
    }
}

/// One line per field: `name: owner, |next, value| what applying it does;`.
macro_rules! field_table {
    ($( $name:ident : $owner:ident, |$next:ident, $value:ident| $apply:expr;)*) => {
        /// Every field of a change, in the order the API documents them.
        pub const FIELDS: &[Field] = &[$(
            Field {
                name: stringify!($name),
                pointer: concat!("/", stringify!($name)),
                owner: Owner::$owner,
                read: |json, change| {
                    change.$name = Some(FieldValue::read(json)?);
                    Ok(())
                },
                is_set: |change| change.$name.is_some(),
                #[allow(unused_variables)]
                apply: |change, $next| {
                    if let Some($value) = &change.$name {
                        $apply;
                    }
                },
            },
        )*];
    };
}

field_table! {
    plan: User, |next, plan| next.plan.clone_from(plan);
    stripe_source: User, |next, method| next.has_payment_source = true;
    email: User, |next, email| next.email.clone_from(email);
    cancel_at_period_end: User, |next, flag| next.cancel_at_period_end = *flag;
    // Fixed at creation (it is the subscription's id); validation refuses it in a patch.
    user_id: System, |next, user| debug_assert_eq!(next.user_id, *user);
    stripe_customer: System, |next, id| next.stripe_customer = Some(id.clone());
    stripe_subscription: System, |next, id| next.stripe_subscription = Some(id.clone());
    status: System, |next, status| next.status = *status;
    trial_end: System, |next, end| next.trial_end = Some(end.trunc_subsecs(0));
    licenses: System, |next, count| next.licenses = Some(*count);
    discount_percent: System, |next, percent| next.discount_percent = (*percent > 0).then_some(*percent);
}

/// The field named `name` in JSON.
pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|field| field.name == name)
}

/// The names of every field, for error messages.
pub fn known_names() -> String {
    FIELDS.iter().map(|field| field.name).collect::<Vec<_>>().join(", ")
}
