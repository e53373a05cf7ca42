//! Configuration, read from the environment once at cold start.
//!
//! A missing or malformed variable is an error that names the variable (and never echoes a
//! secret's value), so a misdeployed function fails at start with a message that says what to
//! fix instead of failing its first request.

use std::collections::HashMap;

use crate::subscription::PlanCatalog;

/// Where configuration values come from: the process environment in functions, a map in tests.
/// `Sync`: a function reads it inside its first invocation, across awaits.
pub trait Environment: Sync {
    /// The value of the variable `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Why a function cannot start: which variable to fix. Never carries a secret's value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The variable (named) is not set.
    #[error("the environment variable {0} is not set")]
    Missing(String),
    /// The variable is set to something unusable.
    #[error("the environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: String,
        /// What is wrong with it, without its value.
        reason: String,
    },
}

/// A variable that must be present and non-empty.
pub fn required(env: &dyn Environment, name: &str) -> Result<String, ConfigError> {
    match env.var(name) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(ConfigError::Missing(name.to_owned())),
    }
}

/// A variable that may be absent; present but empty counts as absent.
pub fn optional(env: &dyn Environment, name: &str) -> Option<String> {
    env.var(name).filter(|value| !value.trim().is_empty())
}

/// The name of the variable holding the Stripe price of `plan`: `STRIPE_PRICE_BASIC_MONTHLY`.
pub fn plan_price_variable(plan: &str) -> String {
    format!("STRIPE_PRICE_{}", plan.to_ascii_uppercase())
}

/// A number of trial days from `name`: `default` when unset, 0 for none, at most 730 (Stripe's
/// limit on a trial).
fn trial_days(env: &dyn Environment, name: &str, default: u32) -> Result<u32, ConfigError> {
    match optional(env, name) {
        None => Ok(default),
        Some(text) => match text.trim().parse::<u32>() {
            Ok(days) if days <= 730 => Ok(days),
            _ => Err(ConfigError::Invalid {
                name: name.to_owned(),
                reason: "a whole number of days from 0 (no trial) to 730".to_owned(),
            }),
        },
    }
}

/// `CLOUD_FREE_TRIAL_DAYS`: the trial of the subscriptions API's `pending` plan (31 unless set).
pub fn cloud_free_trial_days(env: &dyn Environment) -> Result<u32, ConfigError> {
    trial_days(env, "CLOUD_FREE_TRIAL_DAYS", 31)
}

/// `SELF_HOSTED_FREE_TRIAL_DAYS`: the trial self-hosted entities are offered on `basic` (0, off,
/// unless set).
pub fn self_hosted_free_trial_days(env: &dyn Environment) -> Result<u32, ConfigError> {
    trial_days(env, "SELF_HOSTED_FREE_TRIAL_DAYS", 0)
}

/// The plan catalog, each plan's price from `STRIPE_PRICE_<PLAN>`, the `pending` plan's trial
/// from `CLOUD_FREE_TRIAL_DAYS`.
pub fn plan_catalog(env: &dyn Environment) -> Result<PlanCatalog, ConfigError> {
    let trial = cloud_free_trial_days(env)?;
    let catalog = PlanCatalog::standard(|plan| {
        let name = plan_price_variable(plan);
        let price = required(env, &name)?;
        if price.starts_with("price_") {
            Ok(price)
        } else {
            Err(ConfigError::Invalid {
                name,
                reason: "a Stripe price id starts with price_".to_owned(),
            })
        }
    })?;
    Ok(catalog.with_cloud_trial_days(trial))
}

/// The DynamoDB table holding every item of the service (`BILLING_TABLE`).
pub fn billing_table(env: &dyn Environment) -> Result<String, ConfigError> {
    required(env, "BILLING_TABLE")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn all_prices() -> HashMap<String, String> {
        crate::subscription::STANDARD_PLANS
            .iter()
            .map(|(id, _, _)| (plan_price_variable(id), format!("price_{id}")))
            .collect()
    }

    #[test]
    fn missing_variable_is_named_in_the_error() {
        let error = billing_table(&env(&[])).unwrap_err();
        assert_eq!(error, ConfigError::Missing("BILLING_TABLE".into()));
        assert!(error.to_string().contains("BILLING_TABLE"));
    }

    #[test]
    fn empty_variable_counts_as_missing() {
        assert!(billing_table(&env(&[("BILLING_TABLE", " ")])).is_err());
    }

    #[test]
    fn catalog_reads_every_plan_price() {
        let catalog = plan_catalog(&all_prices()).unwrap();
        assert_eq!(
            catalog.get("basic_monthly").unwrap().stripe_price,
            "price_basic_monthly"
        );
        assert_eq!(catalog.get("pending").unwrap().trial_days, Some(31));
        assert!(catalog.get("pending").unwrap().admin_only);
        assert!(catalog.get("free").unwrap().admin_only);
        assert!(!catalog.get("business_annual").unwrap().admin_only);
        assert_eq!(catalog.plans().len(), 6);
    }

    #[test]
    fn each_deployment_types_trial_comes_from_its_own_setting() {
        // Given only the cloud trial set, the self-hosted one stays off
        let mut cloud = all_prices();
        cloud.insert("CLOUD_FREE_TRIAL_DAYS".into(), "14".into());
        assert_eq!(
            plan_catalog(&cloud).unwrap().get("pending").unwrap().trial_days,
            Some(14)
        );
        assert_eq!(self_hosted_free_trial_days(&cloud).unwrap(), 0);
        // Given only the self-hosted trial set, the cloud one stays 31
        let mut hosted = all_prices();
        hosted.insert("SELF_HOSTED_FREE_TRIAL_DAYS".into(), "30".into());
        assert_eq!(self_hosted_free_trial_days(&hosted).unwrap(), 30);
        assert_eq!(
            plan_catalog(&hosted).unwrap().get("pending").unwrap().trial_days,
            Some(31)
        );
        // 0 is no trial; anything else that is not a number of days names its variable
        cloud.insert("CLOUD_FREE_TRIAL_DAYS".into(), "0".into());
        assert_eq!(plan_catalog(&cloud).unwrap().get("pending").unwrap().trial_days, None);
        cloud.insert("CLOUD_FREE_TRIAL_DAYS".into(), "a month".into());
        assert!(matches!(
            plan_catalog(&cloud).unwrap_err(),
            ConfigError::Invalid { name, .. } if name == "CLOUD_FREE_TRIAL_DAYS"
        ));
    }

    #[test]
    fn catalog_names_the_missing_price_variable() {
        let mut prices = all_prices();
        prices.remove("STRIPE_PRICE_BUSINESS_ANNUAL");
        assert_eq!(
            plan_catalog(&prices).unwrap_err(),
            ConfigError::Missing("STRIPE_PRICE_BUSINESS_ANNUAL".into())
        );
    }

    #[test]
    fn catalog_rejects_a_value_that_is_not_a_price_id() {
        let mut prices = all_prices();
        prices.insert("STRIPE_PRICE_FREE".into(), "prod_123".into());
        assert!(matches!(plan_catalog(&prices), Err(ConfigError::Invalid { name, .. }) if name == "STRIPE_PRICE_FREE"));
    }
}
