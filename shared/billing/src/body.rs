//! Request bodies read leniently against a declared shape, so that every error of a body is
//! reported at once (API.md conventions): unknown members (`invalid_format` on their pointer),
//! absent required members (`missing`), members of the wrong type (`invalid_format`), and then,
//! on what could be read, the value errors of the use case. A reader that stopped at the first
//! serde error would hide the rest.

use serde_json::Value;

use crate::errors::{FieldError, Slug, ValidationErrors};

/// One member of a JSON object body.
#[derive(Clone, Copy, Debug)]
pub enum Member {
    /// A string that must be present.
    Text,
    /// A string that may be absent or null.
    OptionalText,
    /// An object with these members.
    Object(&'static [(&'static str, Member)]),
    /// An object with these members, or nothing (absent or null).
    OptionalObject(&'static [(&'static str, Member)]),
}

/// A body read as far as it could be: the JSON, and the shape errors found in it.
#[derive(Clone, Debug, Default)]
pub struct ShapedBody {
    /// The body as JSON (an object).
    pub value: Value,
    /// Every unknown, absent or mistyped member.
    pub errors: Vec<FieldError>,
}

impl ShapedBody {
    /// Reads `body` against `shape`. Only a body that is not a JSON object fails outright.
    pub fn read(body: &[u8], shape: &[(&'static str, Member)]) -> Result<Self, ValidationErrors> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| FieldError::general(Slug::InvalidFormat, format!("the body is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(FieldError::general(Slug::InvalidFormat, "the body must be a JSON object").into());
        }
        let mut errors = Vec::new();
        check(&value, shape, "", &mut errors);
        Ok(ShapedBody { value, errors })
    }

    /// The string at `pointer`, or empty when it is absent or not a string (its error is in
    /// [`ShapedBody::errors`] already).
    pub fn text(&self, pointer: &str) -> String {
        self.value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// The string at `pointer`, `None` when absent, null or not a string.
    pub fn optional_text(&self, pointer: &str) -> Option<String> {
        self.value.pointer(pointer).and_then(Value::as_str).map(str::to_owned)
    }
}

fn check(value: &Value, shape: &[(&'static str, Member)], prefix: &str, errors: &mut Vec<FieldError>) {
    let Some(object) = value.as_object() else {
        return;
    };
    for name in object.keys() {
        if !shape.iter().any(|(known, _)| known == name) {
            let known: Vec<&str> = shape.iter().map(|(known, _)| *known).collect();
            errors.push(FieldError::field(
                Slug::InvalidFormat,
                format!("{prefix}/{}", name.replace('~', "~0").replace('/', "~1")),
                format!("unknown field; known fields are {}", known.join(", ")),
            ));
        }
    }
    for (name, member) in shape {
        let pointer = format!("{prefix}/{name}");
        match (member, object.get(*name)) {
            (Member::OptionalText | Member::OptionalObject(_), None | Some(Value::Null)) => {}
            (_, None | Some(Value::Null)) => errors.push(FieldError::field(
                Slug::Missing,
                &pointer,
                format!("{name} is required"),
            )),
            (Member::Text | Member::OptionalText, Some(found)) if !found.is_string() => {
                errors.push(FieldError::field(Slug::InvalidFormat, &pointer, "must be a string"));
            }
            (Member::Object(members) | Member::OptionalObject(members), Some(found)) => {
                if found.is_object() {
                    check(found, members, &pointer, errors);
                } else {
                    errors.push(FieldError::field(Slug::InvalidFormat, &pointer, "must be an object"));
                }
            }
            _ => {}
        }
    }
}

/// One error per field, the first reported: a field absent or mistyped is not also reported
/// as empty or malformed by the checks of its value.
pub fn one_per_field(errors: Vec<FieldError>) -> Vec<FieldError> {
    let mut seen = std::collections::HashSet::new();
    errors
        .into_iter()
        .filter(|error| error.field.is_none() || seen.insert(error.field.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: &[(&str, Member)] = &[
        ("name", Member::Text),
        ("note", Member::OptionalText),
        ("inner", Member::Object(&[("id", Member::Text)])),
    ];

    #[test]
    fn every_unknown_absent_and_mistyped_member_is_reported_on_its_pointer() {
        let read = ShapedBody::read(br#"{"name": 5, "inner": {"colour": 1}, "extra": true}"#, SHAPE).unwrap();
        let mut found: Vec<(String, Slug)> = read.errors.iter().map(|e| (e.field.clone().unwrap(), e.slug)).collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            found,
            [
                ("/extra".to_owned(), Slug::InvalidFormat),
                ("/inner/colour".to_owned(), Slug::InvalidFormat),
                ("/inner/id".to_owned(), Slug::Missing),
                ("/name".to_owned(), Slug::InvalidFormat),
            ]
        );
        assert_eq!(read.text("/name"), "");
        assert_eq!(read.optional_text("/note"), None);
    }

    #[test]
    fn a_body_that_is_not_an_object_fails_outright() {
        assert!(ShapedBody::read(b"[1]", SHAPE).is_err());
        assert!(ShapedBody::read(b"{", SHAPE).is_err());
    }
}
