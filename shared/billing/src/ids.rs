//! Identifiers as the API spells them: lowercase, hyphenated UUIDs and nothing else.
//!
//! `Uuid::parse_str` also accepts braces, URNs, upper case and the unhyphenated form; accepting
//! those would let two spellings name one subscription in paths, logs and keys.

use uuid::Uuid;

/// Parses the canonical form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase hex) only.
pub fn parse_canonical_uuid(text: &str) -> Option<Uuid> {
    let well_shaped = text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        });
    if well_shaped { Uuid::parse_str(text).ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uuid_is_accepted() {
        let id = "0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b";
        assert_eq!(parse_canonical_uuid(id).unwrap().to_string(), id);
    }

    #[test]
    fn other_spellings_of_a_uuid_are_rejected() {
        for text in [
            "0B9E3C2A-7F4D-4D8A-9A51-3F1C2E4D5A6B",
            "0b9e3c2a7f4d4d8a9a513f1c2e4d5a6b",
            "{0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b}",
            "urn:uuid:0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b",
            "0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6",
            "not-a-uuid",
            "",
        ] {
            assert_eq!(parse_canonical_uuid(text), None, "{text}");
        }
    }
}
