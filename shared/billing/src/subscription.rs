//! Subscriptions: the resource, the plans it can be on, and the change a client asks for.
//!
//! This module owns the billing rules that do not depend on any service: which properties a
//! user may change and which only an administrator (or the system) may, which plans a caller may
//! choose, what a valid change looks like, and what the subscription becomes once a change is
//! applied. Everything here is pure: time comes in as an argument.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::errors::{FieldError, Slug, ValidationErrors};

mod fields;

pub use fields::{FIELDS, Field, Owner};

/// Where a subscription stands, in Stripe's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In its free trial.
    Trialing,
    /// Paid and current.
    Active,
    /// A payment failed; Stripe is retrying.
    PastDue,
    /// Paused (a trial ended without a payment method).
    Paused,
    /// Ended.
    Canceled,
    /// The first payment needs attention.
    Incomplete,
    /// Payments failed for good; not serving.
    Unpaid,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 7] = [
        Status::Trialing,
        Status::Active,
        Status::PastDue,
        Status::Paused,
        Status::Canceled,
        Status::Incomplete,
        Status::Unpaid,
    ];

    /// The status as the API (and Stripe) spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Trialing => "trialing",
            Status::Active => "active",
            Status::PastDue => "past_due",
            Status::Paused => "paused",
            Status::Canceled => "canceled",
            Status::Incomplete => "incomplete",
            Status::Unpaid => "unpaid",
        }
    }

    /// The status spelled `text`, if it is one.
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One user's (or one remote realm's) subscription, as stored and as returned by the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Equals `user_id`: one subscription per user.
    pub id: Uuid,
    /// The user it belongs to.
    pub user_id: Uuid,
    /// The subscriber's address.
    pub email: String,
    /// The plan's id.
    pub plan: String,
    /// Where it stands.
    pub status: Status,
    /// When the trial started (the signup), if there is one.
    pub trial_start: Option<DateTime<Utc>>,
    /// When the trial ends, if there is one.
    pub trial_end: Option<DateTime<Utc>>,
    /// Whether it ends at the end of the period.
    pub cancel_at_period_end: bool,
    /// When the current period ends.
    pub current_period_end: Option<DateTime<Utc>>,
    /// The Stripe customer, once created.
    pub stripe_customer: Option<String>,
    /// The Stripe subscription, once created.
    pub stripe_subscription: Option<String>,
    /// Whether a payment method was attached.
    pub has_payment_source: bool,
    /// Licenses bought, when the plan counts them.
    pub licenses: Option<u32>,
    /// A discount, in percent.
    pub discount_percent: Option<u32>,
    /// The last invoice Stripe made for it (`in_...`), when known: only that invoice's payment
    /// makes a past-due subscription active again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_invoice: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Starts at 1 and grows by one with every stored change; the ETag of the resource.
    pub version: u64,
}

/// A plan a subscription can be on and what it costs in Stripe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The plan's id (`basic_monthly`, ...).
    pub id: String,
    /// The Stripe price (`price_...`) a subscription on this plan is billed at.
    pub stripe_price: String,
    /// Only `subscriptions_admin` (or the system) may put a subscription on it.
    pub admin_only: bool,
    /// Days of free trial when a subscription starts on it.
    pub trial_days: Option<u32>,
}

impl Plan {
    /// When a trial started at `start` ends on this plan, if it has one.
    pub fn trial_end_from(&self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.trial_days.map(|days| start + Duration::days(i64::from(days)))
    }
}

/// The plans of the product, as API.md lists them: (id, admin only, trial days).
pub const STANDARD_PLANS: [(&str, bool, Option<u32>); 6] = [
    (PlanCatalog::PENDING, true, Some(31)),
    ("free", true, None),
    ("basic_monthly", false, None),
    ("basic_annual", false, None),
    ("business_monthly", false, None),
    ("business_annual", false, None),
];

/// The plans on offer. Price ids come from configuration, never from code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanCatalog {
    plans: Vec<Plan>,
}

impl PlanCatalog {
    /// Where every system-created subscription starts: signed up, no plan chosen yet.
    pub const PENDING: &'static str = "pending";

    /// A catalog of `plans`.
    pub fn new(plans: Vec<Plan>) -> Self {
        PlanCatalog { plans }
    }

    /// The standard plans, each priced by `price_of(plan id)`; `None` for a plan without a
    /// price is an error naming the plan, returned by the caller's configuration layer.
    pub fn standard<E>(mut price_of: impl FnMut(&str) -> Result<String, E>) -> Result<Self, E> {
        let plans = STANDARD_PLANS
            .iter()
            .map(|&(id, admin_only, trial_days)| {
                Ok(Plan {
                    id: id.to_owned(),
                    stripe_price: price_of(id)?,
                    admin_only,
                    trial_days,
                })
            })
            .collect::<Result<_, E>>()?;
        Ok(PlanCatalog { plans })
    }

    /// The same catalog with the `pending` plan's trial set to `days` (0: no trial).
    pub fn with_cloud_trial_days(mut self, days: u32) -> Self {
        for plan in &mut self.plans {
            if plan.id == PlanCatalog::PENDING {
                plan.trial_days = (days > 0).then_some(days);
            }
        }
        self
    }

    /// The plan `id`.
    pub fn get(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }

    /// The plan billed at this Stripe price.
    pub fn by_stripe_price(&self, price: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.stripe_price == price)
    }

    /// Every plan.
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    fn ids(&self) -> String {
        self.plans.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// How much say the caller has over a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority {
    /// The subscriber: user-controlled properties and non-admin plans only.
    Owner,
    /// `subscriptions_admin`, or the system itself (signup, webhooks): everything.
    Admin,
}

/// What a client asks to change (the body of POST and PATCH). Absent means "leave alone".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionChange {
    // User-controlled.
    /// A plan to move to.
    pub plan: Option<String>,
    /// A Stripe PaymentMethod id to attach and make the default.
    pub stripe_source: Option<String>,
    /// A new address.
    pub email: Option<String>,
    /// End (or not) at the end of the period.
    pub cancel_at_period_end: Option<bool>,
    // System-controlled.
    /// The user (creates only).
    pub user_id: Option<Uuid>,
    /// The Stripe customer (administrators).
    pub stripe_customer: Option<String>,
    /// The Stripe subscription (administrators).
    pub stripe_subscription: Option<String>,
    /// A status (administrators).
    pub status: Option<Status>,
    /// A trial end (administrators).
    pub trial_end: Option<DateTime<Utc>>,
    /// Licenses (administrators).
    pub licenses: Option<u32>,
    /// A discount (administrators).
    pub discount_percent: Option<u32>,
}

/// A request body read as a change as far as it could be: see [`SubscriptionChange::read`].
#[derive(Default)]
pub struct ReadChange {
    /// The fields that could be read.
    pub change: SubscriptionChange,
    /// Why the others could not (type errors, unknown fields, nulls).
    pub errors: Vec<FieldError>,
    /// The known fields the body named, read or not.
    pub named: Vec<&'static Field>,
}

impl ReadChange {
    /// Validates a create request (admin or system) with every error at once: reading errors,
    /// missing required fields (a field that is present but malformed is not also missing) and
    /// value errors.
    pub fn validate_create(
        self,
        catalog: &PlanCatalog,
        now: DateTime<Utc>,
    ) -> Result<SubscriptionChange, ValidationErrors> {
        let mut errors = self.errors;
        for (name, pointer) in [("user_id", "/user_id"), ("email", "/email")] {
            if !self.named.iter().any(|field| field.name == name) {
                errors.push(FieldError::field(Slug::Missing, pointer, format!("{name} is required")));
            }
        }
        self.change.check_values(Authority::Admin, catalog, now, &mut errors);
        finish(crate::body::one_per_field(errors))?;
        Ok(self.change)
    }

    /// Validates a change of an existing subscription made with `authority`, with every error
    /// at once: a system-controlled field sent by a non-administrator is refused
    /// (`access_denied`) whatever its value, alongside the other fields' reading and value
    /// errors; an empty change is `missing`.
    pub fn validate_patch(
        self,
        authority: Authority,
        catalog: &PlanCatalog,
        now: DateTime<Utc>,
    ) -> Result<SubscriptionChange, ValidationErrors> {
        if self.named.is_empty() && self.errors.is_empty() {
            return Err(FieldError::general(Slug::Missing, "the change is empty: send at least one field").into());
        }
        let mut errors = Vec::new();
        for field in &self.named {
            match authority {
                Authority::Owner if field.owner == Owner::System => errors.push(FieldError::field(
                    Slug::AccessDenied,
                    field.pointer,
                    "only an administrator may change this property",
                )),
                Authority::Admin if field.name == "user_id" => errors.push(FieldError::field(
                    Slug::InvalidValue,
                    field.pointer,
                    "user_id is fixed when the subscription is created",
                )),
                _ => {}
            }
        }
        errors.extend(self.errors);
        self.change.check_values(authority, catalog, now, &mut errors);
        finish(crate::body::one_per_field(errors))?;
        Ok(self.change)
    }
}

const NOT_NULL: &str = "must not be null; leave the field out to keep its value";

impl SubscriptionChange {
    /// Reads a request body. Every malformed or unknown field is reported, not just the first.
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationErrors> {
        let read = SubscriptionChange::read(body)?;
        finish(read.errors)?;
        Ok(read.change)
    }

    /// Reads a request body as far as it can be read: the fields that could be read, an error
    /// for each that could not, and which known fields the body named. Only a body that is not
    /// a JSON object fails outright; the rest is left to [`ReadChange::validate_create`] and
    /// [`ReadChange::validate_patch`], which report every error at once.
    pub fn read(body: &[u8]) -> Result<ReadChange, ValidationErrors> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| FieldError::general(Slug::InvalidFormat, format!("the body is not valid JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(FieldError::general(Slug::InvalidFormat, "the body must be a JSON object").into());
        };
        let mut read = ReadChange::default();
        for (name, value) in &fields {
            let pointer = format!("/{}", escape_pointer(name));
            let Some(field) = fields::field(name) else {
                read.errors.push(FieldError::field(
                    Slug::InvalidFormat,
                    pointer,
                    format!("unknown field; known fields are {}", fields::known_names()),
                ));
                continue;
            };
            read.named.push(field);
            if value.is_null() {
                read.errors
                    .push(FieldError::field(Slug::InvalidFormat, pointer, NOT_NULL));
                continue;
            }
            if let Err((slug, message)) = (field.read)(value, &mut read.change) {
                read.errors.push(FieldError::field(slug, pointer, message));
            }
        }
        Ok(read)
    }

    /// True when the change asks for nothing at all.
    pub fn is_empty(&self) -> bool {
        *self == SubscriptionChange::default()
    }

    /// The JSON pointers of the system-controlled properties this change touches.
    pub fn changing_system_properties(&self) -> Vec<&'static str> {
        FIELDS
            .iter()
            .filter(|field| field.owner == Owner::System && (field.is_set)(self))
            .map(|field| field.pointer)
            .collect()
    }

    /// Checks a create request (admin or system only). `user_id` and `email` are required;
    /// `plan` defaults to `pending`.
    pub fn validate_create(&self, catalog: &PlanCatalog, now: DateTime<Utc>) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        if self.user_id.is_none() {
            errors.push(FieldError::field(Slug::Missing, "/user_id", "user_id is required"));
        }
        if self.email.is_none() {
            errors.push(FieldError::field(Slug::Missing, "/email", "email is required"));
        }
        self.check_values(Authority::Admin, catalog, now, &mut errors);
        finish(errors)
    }

    /// Checks a change to an existing subscription made with `authority`.
    pub fn validate_patch(
        &self,
        authority: Authority,
        catalog: &PlanCatalog,
        now: DateTime<Utc>,
    ) -> Result<(), ValidationErrors> {
        if self.is_empty() {
            return Err(FieldError::general(Slug::Missing, "the change is empty: send at least one field").into());
        }
        let mut errors = Vec::new();
        match authority {
            Authority::Owner => {
                for pointer in self.changing_system_properties() {
                    errors.push(FieldError::field(
                        Slug::AccessDenied,
                        pointer,
                        "only an administrator may change this property",
                    ));
                }
            }
            Authority::Admin => {
                if self.user_id.is_some() {
                    errors.push(FieldError::field(
                        Slug::InvalidValue,
                        "/user_id",
                        "user_id is fixed when the subscription is created",
                    ));
                }
            }
        }
        self.check_values(authority, catalog, now, &mut errors);
        finish(errors)
    }

    fn check_values(
        &self,
        authority: Authority,
        catalog: &PlanCatalog,
        now: DateTime<Utc>,
        errors: &mut Vec<FieldError>,
    ) {
        if let Some(id) = &self.plan {
            match catalog.get(id) {
                None => errors.push(FieldError::field(
                    Slug::InvalidValue,
                    "/plan",
                    format!("unknown plan {id:?}; plans are {}", catalog.ids()),
                )),
                Some(plan) if plan.admin_only && authority == Authority::Owner => errors.push(FieldError::field(
                    Slug::AccessDenied,
                    "/plan",
                    format!("only an administrator may put a subscription on the {id:?} plan"),
                )),
                Some(_) => {}
            }
        }
        if let Some(email) = &self.email
            && !is_plausible_email(email)
        {
            errors.push(FieldError::field(Slug::InvalidValue, "/email", "not an email address"));
        }
        let prefixed = [
            (
                "/stripe_source",
                &self.stripe_source,
                "pm_",
                "a Stripe PaymentMethod id",
            ),
            (
                "/stripe_customer",
                &self.stripe_customer,
                "cus_",
                "a Stripe customer id",
            ),
            (
                "/stripe_subscription",
                &self.stripe_subscription,
                "sub_",
                "a Stripe subscription id",
            ),
        ];
        for (pointer, value, prefix, what) in prefixed {
            if let Some(value) = value
                && !is_stripe_id(value, prefix)
            {
                errors.push(FieldError::field(
                    Slug::InvalidValue,
                    pointer,
                    format!("must be {what} ({prefix}...)"),
                ));
            }
        }
        if let Some(trial_end) = self.trial_end
            && trial_end <= now
        {
            errors.push(FieldError::field(
                Slug::InvalidValue,
                "/trial_end",
                "the trial end is in the past",
            ));
        }
        if let Some(percent) = self.discount_percent
            && percent > 100
        {
            errors.push(FieldError::field(
                Slug::InvalidValue,
                "/discount_percent",
                "must be between 0 and 100",
            ));
        }
    }

    /// The subscription a validated create request describes, before Stripe has seen it.
    /// The trial runs from `trial_start` (signup time) for the plan's trial length unless the
    /// request names its own `trial_end`.
    pub fn new_subscription(
        &self,
        plan: &Plan,
        trial_start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Subscription> {
        let user_id = self.user_id?;
        let email = self.email.clone()?;
        let now = now.trunc_subsecs(0);
        let trial_start = trial_start.trunc_subsecs(0);
        let trial_end = self.trial_end.or_else(|| plan.trial_end_from(trial_start));
        let status = self.status.unwrap_or(if trial_end.is_some() {
            Status::Trialing
        } else {
            Status::Active
        });
        Some(Subscription {
            id: user_id,
            user_id,
            email,
            plan: plan.id.clone(),
            status,
            trial_start: trial_end.map(|_| trial_start),
            trial_end,
            cancel_at_period_end: self.cancel_at_period_end.unwrap_or(false),
            current_period_end: None,
            stripe_customer: self.stripe_customer.clone(),
            stripe_subscription: self.stripe_subscription.clone(),
            has_payment_source: self.stripe_source.is_some(),
            licenses: self.licenses,
            discount_percent: self.discount_percent.filter(|percent| *percent > 0),
            latest_invoice: None,
            created_at: now,
            updated_at: now,
            version: 1,
        })
    }

    /// What `current` becomes with this change, or `None` when the change changes nothing
    /// (so nothing needs to be written). The result carries the next version.
    pub fn apply(&self, current: &Subscription, now: DateTime<Utc>) -> Option<Subscription> {
        let mut next = current.clone();
        for field in FIELDS {
            (field.apply)(self, &mut next);
        }
        if next == *current {
            return None;
        }
        next.updated_at = now.trunc_subsecs(0).max(current.updated_at);
        next.version = current.version + 1;
        Some(next)
    }
}

fn finish(errors: Vec<FieldError>) -> Result<(), ValidationErrors> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// RFC 6901: `~` and `/` in a member name are escaped in a pointer.
fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Deliberately loose: one `@` with something on each side, no whitespace, a dot in the
/// domain. Deliverability is the mail server's to judge.
pub(crate) fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn is_stripe_id(value: &str, prefix: &str) -> bool {
    value.len() > prefix.len()
        && value.len() <= 255
        && value.starts_with(prefix)
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests;
