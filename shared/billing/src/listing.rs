//! The administrators' list of subscriptions (`GET /subscriptions?email&status&plan&limit&cursor`):
//! the filters read and checked, a page from the store's indexes, and its opaque cursor.
//!
//! A cursor carries the filters it was made for: sent with other filters, it is refused rather
//! than read as a position in a list it does not belong to.

use serde_json::{Value, json};

use crate::errors::{FieldError, Slug, ValidationErrors};
use crate::paging::{self, PageQuery};
use crate::store::{Store, StoreError, SubscriptionFilter};
use crate::subscription::{STANDARD_PLANS, Status};

/// How many subscriptions a page holds when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;

/// The longest email address a filter takes (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;

/// A list request: its filters and page.
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    /// Which subscriptions.
    pub filter: SubscriptionFilter,
    /// At most this many.
    pub limit: usize,
    /// The store's position to go on from.
    pub position: Option<Value>,
}

/// The query parameters of a list request, as sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListParams<'a> {
    /// `email`.
    pub email: Option<&'a str>,
    /// `status`.
    pub status: Option<&'a str>,
    /// `plan`.
    pub plan: Option<&'a str>,
    /// `limit`.
    pub limit: Option<&'a str>,
    /// `cursor`.
    pub cursor: Option<&'a str>,
}

impl ListQuery {
    /// Reads the parameters; every bad one is reported, each by its name.
    pub fn read(params: ListParams<'_>) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        let email = params.email.map(str::trim).filter(|email| {
            let fits = !email.is_empty() && email.len() <= MAX_EMAIL;
            if !fits {
                errors.push(FieldError::param(
                    Slug::InvalidValue,
                    "email",
                    format!("email must be an address of 1 to {MAX_EMAIL} characters"),
                ));
            }
            fits
        });
        let status = params.status.and_then(|text| {
            let status = Status::parse(text);
            if status.is_none() {
                let known: Vec<_> = Status::ALL.iter().map(|s| s.as_str()).collect();
                errors.push(FieldError::param(
                    Slug::InvalidValue,
                    "status",
                    format!("unknown status {text:?}; statuses are {}", known.join(", ")),
                ));
            }
            status
        });
        let plan = params.plan.and_then(|plan| {
            if !STANDARD_PLANS.iter().any(|(id, _, _)| *id == plan) {
                let known: Vec<_> = STANDARD_PLANS.iter().map(|(id, _, _)| *id).collect();
                errors.push(FieldError::param(
                    Slug::InvalidValue,
                    "plan",
                    format!("unknown plan {plan:?}; plans are {}", known.join(", ")),
                ));
                return None;
            }
            Some(plan.to_owned())
        });
        let page = match PageQuery::read(params.limit, params.cursor, DEFAULT_LIMIT) {
            Ok(page) => Some(page),
            Err(ValidationErrors(found)) => {
                errors.extend(found);
                None
            }
        };
        if !errors.is_empty() {
            return Err(ValidationErrors(errors));
        }
        let filter = SubscriptionFilter {
            email: email.map(str::to_owned),
            status,
            plan,
        };
        let page = page.unwrap_or(PageQuery {
            limit: DEFAULT_LIMIT,
            cursor: None,
        });
        let position = match page.cursor {
            None => None,
            Some(cursor) if cursor["filter"] == filter_key(&filter) => Some(cursor["at"].clone()),
            Some(_) => return Err(ValidationErrors(vec![paging::unreadable_cursor()])),
        };
        Ok(ListQuery {
            filter,
            limit: page.limit,
            position,
        })
    }
}

/// One page, as the API answers it: `{"subscriptions": [...], "next_cursor"}`.
pub async fn list(store: &dyn Store, query: &ListQuery) -> Result<Value, StoreError> {
    let page = store
        .list_subscriptions(&query.filter, query.limit, query.position.as_ref())
        .await?;
    let next_cursor = page
        .next
        .map(|at| paging::encode(&json!({"filter": filter_key(&query.filter), "at": at})));
    Ok(json!({"subscriptions": page.subscriptions, "next_cursor": next_cursor}))
}

/// The filters as a cursor records them.
fn filter_key(filter: &SubscriptionFilter) -> Value {
    json!([
        filter.email.as_deref().map(str::to_lowercase),
        filter.status.map(Status::as_str),
        filter.plan
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_status_and_plan_and_a_bad_limit_are_refused_each_by_name() {
        let params = ListParams {
            status: Some("sleeping"),
            plan: Some("gold"),
            limit: Some("500"),
            email: Some(""),
            ..ListParams::default()
        };
        let errors = ListQuery::read(params).unwrap_err();
        let names: Vec<_> = errors.0.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(errors.0.len(), 4, "{names:?}");
    }

    #[test]
    fn a_cursor_made_for_other_filters_is_refused() {
        let made_for_active = paging::encode(&json!({"filter": ["x", "active", null], "at": {"after": "k"}}));
        let params = ListParams {
            status: Some("canceled"),
            cursor: Some(&made_for_active),
            ..ListParams::default()
        };
        assert!(ListQuery::read(params).is_err());
        let same = ListParams {
            email: Some("X"),
            status: Some("active"),
            cursor: Some(&made_for_active),
            ..ListParams::default()
        };
        let query = ListQuery::read(same).unwrap();
        assert_eq!(query.position, Some(json!({"after": "k"})));
        assert_eq!(query.limit, DEFAULT_LIMIT);
    }
}
