//! Who is calling and what they may do: scopes and the principal behind a bearer token.
//!
//! In AWS the HTTP API's JWT authorizer has already checked the token; the claims arrive in the
//! request context as strings. The local server checks its own tokens and fills in the same
//! shape, so this module never sees a token, only claims.

use std::collections::HashMap;

use uuid::Uuid;

use crate::ids::parse_canonical_uuid;
use crate::subscription::Authority;

/// A permission a token can carry: an id as it appears in the `scope` claim, with the name and
/// description shown to people granting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The id in the `scope` claim.
    pub id: &'static str,
    /// The name shown to people granting it.
    pub name: &'static str,
    /// What it allows, for people granting it.
    pub description: &'static str,
}

impl Scope {
    /// A user's own subscription: read it, choose plans, attach payment methods.
    pub const SUBSCRIPTION: Scope = Scope {
        id: "subscriptions",
        name: "Manage Subscriptions",
        description: "Read and update your own subscription.",
    };
    /// Every subscription, system-controlled properties included.
    pub const SUBSCRIPTION_ADMIN: Scope = Scope {
        id: "subscriptions_admin",
        name: "Administer Subscriptions",
        description: "Read and update any subscription, create subscriptions and change system-controlled properties.",
    };
    /// Every scope the service knows.
    pub const ALL: [Scope; 2] = [Scope::SUBSCRIPTION, Scope::SUBSCRIPTION_ADMIN];

    /// The scope with this id in the `scope` claim, if the service knows it.
    pub fn from_id(id: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.id == id)
    }
}

/// Why a caller was turned away.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable identity: answered 401.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A known caller without the right: answered 403.
    #[error("{0}")]
    Forbidden(&'static str),
}

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user the token was issued to (the `sub` claim).
    pub user_id: Uuid,
    scopes: Vec<Scope>,
}

impl Principal {
    /// A principal holding `scopes`.
    pub fn new(user_id: Uuid, scopes: Vec<Scope>) -> Self {
        Principal { user_id, scopes }
    }

    /// Reads `sub` (the user's UUID) and `scope` (space-separated scope ids) from JWT claims.
    /// Scope ids this service does not know are ignored: tokens are shared with other services.
    pub fn from_claims(claims: &HashMap<String, String>) -> Result<Self, AuthError> {
        let subject = claims
            .get("sub")
            .ok_or(AuthError::Unauthenticated("the token has no subject (sub claim)"))?;
        let user_id = parse_canonical_uuid(subject).ok_or(AuthError::Unauthenticated(
            "the token's subject (sub claim) is not a lowercase hyphenated UUID",
        ))?;
        let scopes = claims
            .get("scope")
            .map(|text| {
                let mut scopes: Vec<Scope> = text.split_whitespace().filter_map(Scope::from_id).collect();
                scopes.dedup();
                scopes
            })
            .unwrap_or_default();
        Ok(Principal { user_id, scopes })
    }

    /// Whether the token carries `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether the token carries the administrators' scope.
    pub fn is_admin(&self) -> bool {
        self.has(Scope::SUBSCRIPTION_ADMIN)
    }

    /// Decides, before anything is looked up, whether this caller may act on subscription
    /// `id` and with what authority, so a refusal says nothing about whether it exists.
    pub fn authority_over(&self, id: Uuid) -> Result<Authority, AuthError> {
        if self.is_admin() {
            Ok(Authority::Admin)
        } else if !self.has(Scope::SUBSCRIPTION) {
            Err(AuthError::Forbidden("the token lacks the subscriptions scope"))
        } else if self.user_id == id {
            Ok(Authority::Owner)
        } else {
            Err(AuthError::Forbidden("this subscription belongs to someone else"))
        }
    }

    /// Creating subscriptions is for administrators only.
    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AuthError::Forbidden("the token lacks the subscriptions_admin scope"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "0b9e3c2a-7f4d-4d8a-9a51-3f1c2e4d5a6b";
    const OTHER: &str = "5f0c6a3e-2b1d-4c9e-8f7a-6d5e4c3b2a19";

    fn claims(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn principal_reads_subject_and_space_separated_scopes() {
        let principal = Principal::from_claims(&claims(&[
            ("sub", USER),
            ("scope", "openid subscriptions  subscriptions_admin"),
        ]))
        .unwrap();
        assert_eq!(principal.user_id.to_string(), USER);
        assert!(principal.has(Scope::SUBSCRIPTION));
        assert!(principal.is_admin());
    }

    #[test]
    fn missing_subject_is_unauthenticated() {
        let error = Principal::from_claims(&claims(&[("scope", "subscriptions")])).unwrap_err();
        assert!(matches!(error, AuthError::Unauthenticated(_)));
    }

    #[test]
    fn malformed_subject_is_unauthenticated() {
        let error = Principal::from_claims(&claims(&[("sub", "ada"), ("scope", "subscriptions")])).unwrap_err();
        assert!(matches!(error, AuthError::Unauthenticated(_)));
    }

    #[test]
    fn token_without_scope_claim_has_no_scopes() {
        let principal = Principal::from_claims(&claims(&[("sub", USER)])).unwrap();
        assert!(!principal.has(Scope::SUBSCRIPTION));
        assert!(principal.authority_over(principal.user_id).is_err());
    }

    #[test]
    fn owner_has_owner_authority_over_own_subscription_only() {
        let principal = Principal::from_claims(&claims(&[("sub", USER), ("scope", "subscriptions")])).unwrap();
        assert_eq!(principal.authority_over(USER.parse().unwrap()), Ok(Authority::Owner));
        assert!(matches!(
            principal.authority_over(OTHER.parse().unwrap()),
            Err(AuthError::Forbidden(_))
        ));
        assert!(principal.require_admin().is_err());
    }

    #[test]
    fn admin_has_admin_authority_over_any_subscription() {
        let principal = Principal::from_claims(&claims(&[("sub", USER), ("scope", "subscriptions_admin")])).unwrap();
        assert_eq!(principal.authority_over(OTHER.parse().unwrap()), Ok(Authority::Admin));
        assert!(principal.require_admin().is_ok());
    }

    #[test]
    fn scopes_are_values_with_names_and_descriptions() {
        for scope in Scope::ALL {
            assert_eq!(Scope::from_id(scope.id), Some(scope));
            assert!(!scope.name.is_empty() && !scope.description.is_empty());
        }
        assert_eq!(Scope::from_id("subscriptions_superuser"), None);
    }
}
