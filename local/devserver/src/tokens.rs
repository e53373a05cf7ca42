//! Bearer tokens on the local server: HS256 JWTs signed with `DEV_JWT_SECRET`.
//!
//! In AWS the HTTP API's JWT authorizer verifies tokens and hands the claims to the function;
//! here this module does the verifying, and the gateway puts the claims in the same place.

use std::collections::HashMap;

use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub const ISSUER: &str = "billing-devserver";
pub const AUDIENCE: &str = "billing";

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenKeys {
    pub fn new(secret: &str) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A token for `user` with the given space-separated scopes, valid for `valid_for`.
    pub fn mint(&self, user: Uuid, scope: &str, valid_for: Duration) -> String {
        let now = Utc::now().timestamp();
        let claims = json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user.to_string(),
            "scope": scope,
            "iat": now,
            "exp": now + valid_for.num_seconds(),
        });
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of a JSON object cannot fail")
    }

    /// The claims of a valid token, as API Gateway passes them to functions: every value a
    /// string. `None` for anything the JWT authorizer would refuse.
    pub fn verify(&self, authorization: Option<&str>) -> Option<HashMap<String, String>> {
        let token = authorization?
            .strip_prefix("Bearer ")
            .or_else(|| authorization?.strip_prefix("bearer "))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token.trim(), &self.decoding, &validation).ok()?;
        Some(
            data.claims
                .into_iter()
                .map(|(name, value)| {
                    let text = match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (name, text)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_verifies_to_string_claims() {
        let keys = TokenKeys::new("local secret");
        let user = Uuid::new_v4();
        let token = keys.mint(user, "subscriptions", Duration::hours(1));
        let claims = keys.verify(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(claims["sub"], user.to_string());
        assert_eq!(claims["scope"], "subscriptions");
        assert!(claims["exp"].parse::<i64>().is_ok());
    }

    #[test]
    fn token_signed_with_another_secret_is_refused() {
        let token = TokenKeys::new("other").mint(Uuid::new_v4(), "subscriptions", Duration::hours(1));
        assert_eq!(
            TokenKeys::new("local secret").verify(Some(&format!("Bearer {token}"))),
            None
        );
    }

    #[test]
    fn expired_token_is_refused() {
        let keys = TokenKeys::new("local secret");
        let token = keys.mint(Uuid::new_v4(), "subscriptions", Duration::hours(-1));
        assert_eq!(keys.verify(Some(&format!("Bearer {token}"))), None);
    }

    #[test]
    fn missing_or_non_bearer_authorization_is_refused() {
        let keys = TokenKeys::new("local secret");
        assert_eq!(keys.verify(None), None);
        assert_eq!(keys.verify(Some("Basic dXNlcjpwYXNz")), None);
    }
}
