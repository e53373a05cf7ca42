//! Stripe's form encoding: `application/x-www-form-urlencoded` with bracketed keys
//! (`metadata[user_id]=...`, `items[0][price]=...`, `expand[]=...`), read into nested JSON.

use serde_json::{Map, Value};

/// Why a body could not be read as Stripe parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct FormError(pub String);

/// Parses a form body (or query string) into an object. Objects whose keys are all indexes
/// become arrays, in index order.
pub fn parse(body: &str) -> Result<Value, FormError> {
    let mut root = Value::Object(Map::new());
    for (key, value) in form_urlencoded::parse(body.as_bytes()) {
        let path = split_key(&key)?;
        insert(&mut root, &path, value.into_owned())?;
    }
    Ok(arrays(root))
}

/// `items[0][price]` → `["items", "0", "price"]`; `expand[]` → `["expand", ""]`.
fn split_key(key: &str) -> Result<Vec<String>, FormError> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() {
        return Err(FormError(format!("Invalid parameter name: {key}")));
    }
    let mut path = vec![head.to_owned()];
    while !rest.is_empty() {
        let Some(end) = rest.find(']').filter(|_| rest.starts_with('[')) else {
            return Err(FormError(format!("Invalid parameter name: {key}")));
        };
        path.push(rest[1..end].to_owned());
        rest = &rest[end + 1..];
    }
    Ok(path)
}

fn insert(node: &mut Value, path: &[String], value: String) -> Result<(), FormError> {
    let Value::Object(map) = node else {
        return Err(FormError(format!("Invalid parameter nesting at {}", path.join("."))));
    };
    let (first, rest) = path.split_first().expect("paths are never empty");
    // `expand[]=a&expand[]=b`: an empty segment appends.
    let name = if first.is_empty() {
        map.len().to_string()
    } else {
        first.clone()
    };
    if rest.is_empty() {
        if map.insert(name.clone(), Value::String(value)).is_some() {
            return Err(FormError(format!("Received repeated parameter: {name}")));
        }
        return Ok(());
    }
    let child = map.entry(name).or_insert_with(|| Value::Object(Map::new()));
    insert(child, rest, value)
}

fn arrays(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let indexed = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
            if indexed {
                let mut entries: Vec<(usize, Value)> = map
                    .into_iter()
                    .map(|(k, v)| (k.parse().expect("checked"), arrays(v)))
                    .collect();
                entries.sort_by_key(|(i, _)| *i);
                Value::Array(entries.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect())
            }
        }
        other => other,
    }
}

/// Percent-decoding with `+` as space, as forms are encoded.
pub fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_keys_become_objects_and_indexed_keys_arrays() {
        let parsed = parse("customer=cus_1&items%5B0%5D%5Bprice%5D=price_a&items[1][price]=price_b&metadata[user_id]=u+1&trial_end=1700000000").unwrap();
        assert_eq!(
            parsed,
            json!({
                "customer": "cus_1",
                "items": [{"price": "price_a"}, {"price": "price_b"}],
                "metadata": {"user_id": "u 1"},
                "trial_end": "1700000000"
            })
        );
    }

    #[test]
    fn empty_brackets_append() {
        assert_eq!(parse("expand[]=a&expand[]=b").unwrap(), json!({"expand": ["a", "b"]}));
    }

    #[test]
    fn repeated_scalar_parameter_is_an_error() {
        assert!(parse("email=a&email=b").is_err());
    }

    #[test]
    fn malformed_brackets_are_an_error() {
        assert!(parse("items[0=x").is_err());
        assert!(parse("[0]=x").is_err());
    }
}
