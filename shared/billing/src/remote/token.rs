//! Remote-billing access tokens: what a self-hosted server's billing link carries.
//!
//! A token is the JSON of [`AccessClaims`], sealed with AES-256-GCM under `BILLING_TOKEN_KEY`
//! (a fresh random nonce each time, the token's purpose as associated data), then base64url
//! encoded. Whoever holds the link cannot read it (the user's email and name travel in it) nor
//! change it without it being refused, and it expires two hours after it was issued.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{ConfigError, Environment, required};

/// How long a billing access link is good for.
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::hours(2);

/// Binds a sealed token to its use: a token made for one purpose never opens as another.
const ACCESS_PURPOSE: &[u8] = b"remote-billing-access:v1";

/// Derives the CSRF key from `BILLING_TOKEN_KEY`.
const CSRF_KEY_LABEL: &[u8] = b"remote-billing-csrf-key:v1";

/// Where a successful login lands: the only redirect targets there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextPage {
    /// The realm's billing page.
    Billing,
    /// The plans page.
    Plans,
    /// The upgrade page.
    Upgrade,
    /// The sponsorship request page.
    Sponsorship,
    /// The server's deactivation page.
    Deactivate,
}

impl NextPage {
    /// Every page a login may land on.
    pub const ALL: [NextPage; 5] = [
        NextPage::Billing,
        NextPage::Plans,
        NextPage::Upgrade,
        NextPage::Sponsorship,
        NextPage::Deactivate,
    ];

    /// The page's path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            NextPage::Billing => "billing",
            NextPage::Plans => "plans",
            NextPage::Upgrade => "upgrade",
            NextPage::Sponsorship => "sponsorship",
            NextPage::Deactivate => "deactivate",
        }
    }

    /// Reads a `next_page` from a request: one of the allowlist, nothing else.
    pub fn parse(text: &str) -> Option<NextPage> {
        NextPage::ALL.into_iter().find(|page| page.as_str() == text)
    }
}

/// What an access token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user on the remote server.
    pub user_uuid: Uuid,
    /// The user's address on the remote server.
    pub user_email: String,
    /// The user's name on the remote server.
    pub user_full_name: String,
    /// The server that asked for the link.
    pub server_uuid: Uuid,
    /// The organisation the user bills for; `None` for a login of the server's contact, who
    /// manages the server itself (deactivation).
    pub realm_uuid: Option<Uuid>,
    /// The realm's host (the server's hostname for a server login), for the way back.
    pub realm_host: String,
    /// Set once the user has confirmed their email and a billing user exists.
    pub billing_user_id: Option<Uuid>,
    /// When the link was made; it works for two hours.
    pub issued_at: DateTime<Utc>,
    /// `https://` or `http://`, as the server asked.
    pub uri_scheme: String,
    /// Where the login lands.
    pub next_page: Option<NextPage>,
}

impl AccessClaims {
    /// The self-hosted server's billing page, where an expired link sends the user back.
    pub fn way_back(&self) -> String {
        format!("{}{}/self-hosted-billing/", self.uri_scheme, self.realm_host)
    }
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token, altered, or sealed with another key or for another purpose.
    #[error("invalid billing access token")]
    Invalid,
    /// Genuine, but older than two hours; the claims say where to send the user back.
    #[error("billing access token expired")]
    Expired(Box<AccessClaims>),
}

/// Seals and opens access tokens with the key from `BILLING_TOKEN_KEY`, and makes and checks
/// the CSRF tokens of the login forms (an HMAC under a key derived from the same secret).
pub struct TokenSealer {
    key: LessSafeKey,
    csrf: hmac::Key,
    random: SystemRandom,
}

impl std::fmt::Debug for TokenSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSealer { .. }")
    }
}

impl TokenSealer {
    /// From 32 bytes of key.
    pub fn new(key: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("AES-256-GCM takes 32-byte keys");
        // A key of its own for CSRF tokens, so that no value is ever both encrypted and MACed
        // under one key.
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), CSRF_KEY_LABEL);
        TokenSealer {
            key: LessSafeKey::new(unbound),
            csrf: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            random: SystemRandom::new(),
        }
    }

    /// From `BILLING_TOKEN_KEY`: 32 bytes, base64. The value is never echoed in errors.
    pub fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let encoded = required(env, "BILLING_TOKEN_KEY")?;
        let invalid = |reason: &str| ConfigError::Invalid {
            name: "BILLING_TOKEN_KEY".into(),
            reason: reason.into(),
        };
        let bytes = STANDARD.decode(encoded.trim()).map_err(|_| invalid("not base64"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid("must decode to exactly 32 bytes"))?;
        Ok(TokenSealer::new(&key))
    }

    /// The CSRF token of the forms shown to the holder of `binding` (an access token, or a
    /// session id): only someone who saw the page can post its form.
    pub fn csrf_token(&self, binding: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.csrf, binding.as_bytes()))
    }

    /// Whether `token` is the CSRF token of `binding` (compared in constant time).
    pub fn csrf_token_is_valid(&self, binding: &str, token: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(token)
            .is_ok_and(|tag| hmac::verify(&self.csrf, binding.as_bytes(), &tag).is_ok())
    }

    /// A fresh random secret (confirmation keys, session ids), base64url.
    pub fn random_secret(&self) -> String {
        let mut bytes = [0u8; 32];
        self.random.fill(&mut bytes).expect("the system random source works");
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The token of `claims`: sealed, base64url.
    pub fn seal(&self, claims: &AccessClaims) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).expect("the system random source works");
        let mut sealed = serde_json::to_vec(claims).expect("claims serialise");
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ACCESS_PURPOSE),
                &mut sealed,
            )
            .expect("sealing a small message cannot fail");
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Opens a token, refusing altered, foreign and (at `now`) expired ones.
    pub fn open(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, TokenError> {
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| TokenError::Invalid)?;
        if raw.len() <= NONCE_LEN {
            return Err(TokenError::Invalid);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TokenError::Invalid)?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(ACCESS_PURPOSE), &mut sealed)
            .map_err(|_| TokenError::Invalid)?;
        let claims: AccessClaims = serde_json::from_slice(plain).map_err(|_| TokenError::Invalid)?;
        if now - claims.issued_at > ACCESS_TOKEN_LIFETIME || claims.issued_at - now > Duration::minutes(5) {
            return Err(TokenError::Expired(Box::new(claims)));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(issued_at: DateTime<Utc>) -> AccessClaims {
        AccessClaims {
            user_uuid: Uuid::new_v4(),
            user_email: "owner@example.org".into(),
            user_full_name: "Ada Owner".into(),
            server_uuid: Uuid::new_v4(),
            realm_uuid: Some(Uuid::new_v4()),
            realm_host: "chat.example.org".into(),
            billing_user_id: None,
            issued_at,
            uri_scheme: "https://".into(),
            next_page: Some(NextPage::Plans),
        }
    }

    fn sealer() -> TokenSealer {
        TokenSealer::new(&[7u8; 32])
    }

    #[test]
    fn a_sealed_token_opens_to_its_claims() {
        let now = Utc::now();
        let original = claims(now);
        assert_eq!(sealer().open(&sealer().seal(&original), now), Ok(original));
    }

    #[test]
    fn a_token_hides_its_contents() {
        let token = sealer().seal(&claims(Utc::now()));
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("owner@example.org") && !text.contains("Ada"), "{text}");
    }

    #[test]
    fn the_same_claims_seal_differently_each_time() {
        let original = claims(Utc::now());
        assert_ne!(sealer().seal(&original), sealer().seal(&original));
    }

    #[test]
    fn an_altered_token_is_invalid() {
        let token = sealer().seal(&claims(Utc::now()));
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for position in [0, NONCE_LEN + 3, raw.len() - 1] {
            raw[position] ^= 0x01;
            let tampered = URL_SAFE_NO_PAD.encode(&raw);
            assert_eq!(sealer().open(&tampered, Utc::now()), Err(TokenError::Invalid));
            raw[position] ^= 0x01;
        }
        assert_eq!(sealer().open("not-a-token", Utc::now()), Err(TokenError::Invalid));
        assert_eq!(sealer().open("", Utc::now()), Err(TokenError::Invalid));
    }

    #[test]
    fn a_token_sealed_with_another_key_is_invalid() {
        let token = TokenSealer::new(&[9u8; 32]).seal(&claims(Utc::now()));
        assert_eq!(sealer().open(&token, Utc::now()), Err(TokenError::Invalid));
    }

    #[test]
    fn a_token_older_than_two_hours_is_expired_and_says_where_to_go_back() {
        let issued = Utc::now();
        let token = sealer().seal(&claims(issued));
        assert!(sealer().open(&token, issued + Duration::minutes(119)).is_ok());
        match sealer().open(&token, issued + Duration::minutes(121)) {
            Err(TokenError::Expired(claims)) => {
                assert_eq!(claims.way_back(), "https://chat.example.org/self-hosted-billing/")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_csrf_token_is_valid_only_for_its_binding() {
        let sealer = sealer();
        let token = sealer.csrf_token("access-token-a");
        assert!(sealer.csrf_token_is_valid("access-token-a", &token));
        assert!(!sealer.csrf_token_is_valid("access-token-b", &token));
        assert!(!sealer.csrf_token_is_valid("access-token-a", "forged"));
        assert!(!TokenSealer::new(&[8u8; 32]).csrf_token_is_valid("access-token-a", &token));
    }

    #[test]
    fn next_page_is_an_allowlist() {
        for page in NextPage::ALL {
            assert_eq!(NextPage::parse(page.as_str()), Some(page));
        }
        for text in ["", "admin", "https://evil.example.net/", "../billing", "Billing"] {
            assert_eq!(NextPage::parse(text), None, "{text}");
        }
    }

    #[test]
    fn the_key_comes_from_the_environment_as_32_base64_bytes() {
        let env = |value: &str| std::collections::HashMap::from([("BILLING_TOKEN_KEY".to_string(), value.to_string())]);
        assert!(TokenSealer::from_env(&env(&STANDARD.encode([1u8; 32]))).is_ok());
        let short = TokenSealer::from_env(&env(&STANDARD.encode([1u8; 16]))).unwrap_err();
        assert!(short.to_string().contains("32 bytes"));
        assert!(!short.to_string().contains(&STANDARD.encode([1u8; 16])));
        assert!(TokenSealer::from_env(&std::collections::HashMap::new()).is_err());
    }
}
