//! Pages of the operators' lists (API.md, "Operators"): the `limit` and opaque `cursor` query
//! parameters, read once for every list.
//!
//! A cursor is where the next page starts, as JSON, in URL-safe base64: opaque to clients (they
//! send back what they were given) and checked when read back, so a cursor that was edited or
//! belongs to another list is a clear 400, never a page from somewhere else.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::errors::{FieldError, Slug, ValidationErrors};

/// The most a page holds, whatever `limit` asks.
pub const MAX_LIMIT: usize = 100;

/// A page request: how many, and from where.
#[derive(Clone, Debug, PartialEq)]
pub struct PageQuery {
    /// At most this many (1 to [`MAX_LIMIT`]).
    pub limit: usize,
    /// Where the page starts, as the list wrote it; `None` for the first page.
    pub cursor: Option<Value>,
}

impl PageQuery {
    /// Reads `limit` (default `default_limit`) and `cursor`; every bad one is reported.
    pub fn read(limit: Option<&str>, cursor: Option<&str>, default_limit: usize) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        let limit = match limit {
            None => default_limit,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(FieldError::param(
                        Slug::InvalidValue,
                        "limit",
                        format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
                    ));
                    default_limit
                }
            },
        };
        let cursor = match cursor.map(decode) {
            None => None,
            Some(Some(value)) => Some(value),
            Some(None) => {
                errors.push(unreadable_cursor());
                None
            }
        };
        if errors.is_empty() {
            Ok(PageQuery { limit, cursor })
        } else {
            Err(ValidationErrors(errors))
        }
    }

    /// The cursor's member `name` as a whole number, when the page has a cursor; a cursor without
    /// it is not this list's.
    pub fn cursor_number(&self, name: &str) -> Result<Option<u64>, ValidationErrors> {
        match &self.cursor {
            None => Ok(None),
            Some(cursor) => cursor[name]
                .as_u64()
                .map(Some)
                .ok_or_else(|| ValidationErrors(vec![unreadable_cursor()])),
        }
    }
}

/// The error of a cursor this list did not write.
pub fn unreadable_cursor() -> FieldError {
    FieldError::param(
        Slug::InvalidValue,
        "cursor",
        "cursor is not one this list gave; start again without it",
    )
}

/// The opaque form of `position`.
pub fn encode(position: &Value) -> String {
    URL_SAFE_NO_PAD.encode(position.to_string())
}

fn decode(text: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    serde_json::from_slice::<Value>(&bytes).ok().filter(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_the_position_it_was_made_from() {
        let position = serde_json::json!({"after": 7});
        let query = PageQuery::read(Some("2"), Some(&encode(&position)), 50).unwrap();
        assert_eq!(query.limit, 2);
        assert_eq!(query.cursor_number("after").unwrap(), Some(7));
    }

    #[test]
    fn an_edited_cursor_or_a_limit_out_of_range_is_refused_naming_each() {
        let errors = PageQuery::read(Some("0"), Some("not a cursor!"), 50).unwrap_err();
        assert_eq!(errors.0.len(), 2, "{errors:?}");
        assert!(PageQuery::read(Some("101"), None, 50).is_err());
        assert!(PageQuery::read(Some("ten"), None, 50).is_err());
    }

    #[test]
    fn a_cursor_of_another_list_is_refused() {
        let query = PageQuery::read(None, Some(&encode(&serde_json::json!({"other": "x"}))), 50).unwrap();
        assert!(query.cursor_number("after").is_err());
        assert_eq!(PageQuery::read(None, None, 50).unwrap().limit, 50);
    }
}
