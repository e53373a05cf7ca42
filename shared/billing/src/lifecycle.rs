//! The subscription lifecycle endpoints' use cases (API.md, "Subscription lifecycle
//! endpoints"): a SetupIntent for the browser to collect a card, a customer-portal session
//! whose return URL is on an allowed origin, the customer's invoices, and the preview of a plan
//! or license change. None of them writes to the store; each reads the subscription first, so
//! that Stripe is only ever asked about the customer of the subscription named.

use serde_json::Value;
use uuid::Uuid;

use crate::errors::{FieldError, Slug, ValidationErrors};
use crate::store::{Store, StoreError};
use crate::stripe::{Billing, BillingError, InvoicePage, InvoicePreview, SetupIntent, idempotency_key};
use crate::subscription::{Authority, PlanCatalog, Status, Subscription, SubscriptionChange};

/// Why a lifecycle request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// No subscription has this id.
    #[error("no such subscription")]
    NotFound,
    /// The subscription has no Stripe customer (or, for a preview, no live Stripe
    /// subscription) to ask about.
    #[error("the subscription has nothing in Stripe to {0}")]
    NotInStripe(&'static str),
    /// Stripe refused or failed.
    #[error("Stripe did not answer")]
    Billing(#[from] BillingError),
    /// The store failed.
    #[error("the store failed")]
    Store(#[source] StoreError),
}

impl From<StoreError> for LifecycleError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => LifecycleError::NotFound,
            other => LifecycleError::Store(other),
        }
    }
}

/// What the lifecycle use cases need.
#[derive(Clone, Copy)]
pub struct LifecycleContext<'a> {
    /// Where subscriptions live.
    pub store: &'a dyn Store,
    /// Stripe.
    pub billing: &'a dyn Billing,
    /// The plans and their prices.
    pub catalog: &'a PlanCatalog,
}

async fn customer_of(
    context: LifecycleContext<'_>,
    id: Uuid,
    purpose: &'static str,
) -> Result<(Subscription, String), LifecycleError> {
    let subscription = context.store.get_subscription(id).await?;
    let customer = subscription
        .stripe_customer
        .clone()
        .ok_or(LifecycleError::NotInStripe(purpose))?;
    Ok((subscription, customer))
}

/// A SetupIntent on the subscription's customer. `origin` (the request id) keys it: a
/// retried request gets the same intent.
pub async fn setup_intent(
    context: LifecycleContext<'_>,
    id: Uuid,
    origin: &str,
) -> Result<SetupIntent, LifecycleError> {
    let (_, customer) = customer_of(context, id, "collect a card for").await?;
    Ok(context
        .billing
        .create_setup_intent(&customer, &idempotency_key("setup_intent", &id.to_string(), origin))
        .await?)
}

/// A customer-portal session for the subscription's customer, returning to `return_url`
/// (checked by [`PortalRequest::read`]). Returns its URL.
pub async fn portal_session(
    context: LifecycleContext<'_>,
    id: Uuid,
    return_url: &str,
    origin: &str,
) -> Result<String, LifecycleError> {
    let (_, customer) = customer_of(context, id, "open the portal for").await?;
    Ok(context
        .billing
        .create_portal_session(
            &customer,
            return_url,
            &idempotency_key("portal_session", &id.to_string(), origin),
        )
        .await?)
}

/// The customer's invoices, newest first: those of every Stripe subscription the customer
/// had, so a re-subscribed customer still sees the old ones.
pub async fn invoices(
    context: LifecycleContext<'_>,
    id: Uuid,
    page: InvoicesQuery,
) -> Result<InvoicePage, LifecycleError> {
    let (_, customer) = customer_of(context, id, "list invoices of").await?;
    Ok(context
        .billing
        .list_invoices(&customer, page.limit, page.starting_after.as_deref())
        .await?)
}

/// What the change (a `plan` and/or `licenses`) would invoice, prorated as PATCH would
/// prorate it. Changes nothing.
pub async fn preview(
    context: LifecycleContext<'_>,
    id: Uuid,
    change: &SubscriptionChange,
) -> Result<InvoicePreview, LifecycleError> {
    let subscription = context.store.get_subscription(id).await?;
    let Some(stripe_subscription) = subscription
        .stripe_subscription
        .as_deref()
        .filter(|_| subscription.status != Status::Canceled)
    else {
        return Err(LifecycleError::NotInStripe("preview a change of"));
    };
    let price = change
        .plan
        .as_ref()
        .and_then(|plan| context.catalog.get(plan))
        .map(|plan| plan.stripe_price.as_str());
    Ok(context
        .billing
        .preview_change(stripe_subscription, price, change.licenses)
        .await?)
}

/// `GET .../invoices`' query: `limit` (1 to 100, default 10) and `starting_after` (an
/// invoice id, for the next page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvoicesQuery {
    /// How many.
    pub limit: u8,
    /// After which invoice.
    pub starting_after: Option<String>,
}

impl InvoicesQuery {
    /// Reads the query parameters; every bad one is reported.
    pub fn read(limit: Option<&str>, starting_after: Option<&str>) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        let limit = match limit {
            None => 10,
            Some(text) => match text.parse::<u8>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    errors.push(FieldError::param(
                        Slug::InvalidValue,
                        "limit",
                        "limit must be a whole number from 1 to 100",
                    ));
                    10
                }
            },
        };
        let starting_after = starting_after.map(str::to_owned);
        if let Some(id) = &starting_after
            && !(id.starts_with("in_") && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            errors.push(FieldError::param(
                Slug::InvalidFormat,
                "starting_after",
                "starting_after must be an invoice id (in_...)",
            ));
        }
        if errors.is_empty() {
            Ok(InvoicesQuery { limit, starting_after })
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// `POST .../portal-session`'s body: `{"return_url": "https://..."}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalRequest {
    /// Where the portal links back to.
    pub return_url: String,
}

impl PortalRequest {
    /// Reads the body. `return_url` must be an absolute http(s) URL on one of `allowed`
    /// origins (`scheme://host[:port]`): anything else would make the portal an open redirect.
    pub fn read(body: &[u8], allowed: &[String]) -> Result<Self, ValidationErrors> {
        use crate::body::{Member, ShapedBody};
        let shaped = ShapedBody::read(body, &[("return_url", Member::Text)])?;
        let mut errors = shaped.errors.clone();
        let return_url = shaped.text("/return_url");
        if errors.is_empty() {
            match origin_of(&return_url) {
                Some(origin) if allowed.iter().any(|a| a.eq_ignore_ascii_case(&origin)) => {}
                Some(origin) => errors.push(FieldError::field(
                    Slug::InvalidValue,
                    "/return_url",
                    format!("{origin} is not an allowed origin for the return URL"),
                )),
                None => errors.push(FieldError::field(
                    Slug::InvalidValue,
                    "/return_url",
                    "return_url must be an absolute http or https URL",
                )),
            }
        }
        if errors.is_empty() {
            Ok(PortalRequest { return_url })
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL, lowercase; `None` for anything else
/// (relative URLs, other schemes, user info, which could make a URL look like another host's).
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// The origins a portal may return to: those of `CORS_ALLOWED_ORIGINS` (except `*`, which
/// allows any caller but must not allow any redirect) and of `PUBLIC_BASE_URL`.
pub fn return_origins(cors_allowed_origins: &str, public_base_url: Option<&str>) -> Vec<String> {
    cors_allowed_origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty() && *o != "*")
        .filter_map(origin_of)
        .chain(public_base_url.and_then(origin_of))
        .collect()
}

/// `POST .../preview`'s body: `{"plan"?, "licenses"?}`, validated as the same PATCH by the
/// same caller would be (an unknown plan, a plan or licenses the caller may not set), so a
/// preview never shows what the caller could not do.
pub fn read_preview(
    body: &[u8],
    authority: Authority,
    catalog: &PlanCatalog,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<SubscriptionChange, ValidationErrors> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| FieldError::general(Slug::InvalidFormat, format!("the body is not valid JSON: {e}")))?;
    let mut errors: Vec<FieldError> = value
        .as_object()
        .into_iter()
        .flat_map(|object| object.keys())
        .filter(|name| *name != "plan" && *name != "licenses")
        .map(|name| {
            FieldError::field(
                Slug::InvalidFormat,
                format!("/{}", name.replace('~', "~0").replace('/', "~1")),
                "unknown field; a preview takes plan and licenses",
            )
        })
        .collect();
    match SubscriptionChange::read(body).and_then(|read| read.validate_patch(authority, catalog, now)) {
        Ok(change) if errors.is_empty() => Ok(change),
        Ok(_) => Err(ValidationErrors(errors)),
        Err(ValidationErrors(more)) => {
            for error in more {
                if !errors.iter().any(|e| e.field == error.field) {
                    errors.push(error);
                }
            }
            Err(ValidationErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_url_must_be_on_an_allowed_origin() {
        // Given the app's origin and the public base URL
        let allowed = return_origins("https://app.example.com, *", Some("https://billing.example.com/base"));
        assert_eq!(allowed, ["https://app.example.com", "https://billing.example.com"]);
        // When return URLs are read, then only those origins pass; `*` opens none
        let read = |url: &str| PortalRequest::read(format!(r#"{{"return_url": "{url}"}}"#).as_bytes(), &allowed);
        assert!(read("https://app.example.com/account?tab=billing").is_ok());
        assert!(read("https://APP.example.com/").is_ok());
        for refused in [
            "https://evil.example.net/",
            "https://app.example.com.evil.net/",
            "https://app.example.com@evil.net/",
            "http://app.example.com/",
            "/account",
            "javascript:alert(1)",
        ] {
            let errors = read(refused).unwrap_err().0;
            assert_eq!(errors[0].slug, Slug::InvalidValue, "{refused}");
            assert_eq!(errors[0].field.as_deref(), Some("/return_url"));
        }
    }

    #[test]
    fn an_invoices_query_reports_every_bad_parameter() {
        assert_eq!(
            InvoicesQuery::read(None, None).unwrap(),
            InvoicesQuery {
                limit: 10,
                starting_after: None
            }
        );
        let errors = InvoicesQuery::read(Some("0"), Some("cus_1")).unwrap_err().0;
        let params: Vec<_> = errors.iter().map(|e| e.param.as_deref()).collect();
        assert_eq!(params, [Some("limit"), Some("starting_after")]);
    }
}
