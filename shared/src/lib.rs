//! The billing domain crate: the one place where billing rules live.
//!
//! Functions (`functions/*`) are thin: they read their configuration, build their adapters
//! once, and call into this crate. Nothing here depends on a Lambda runtime, so every rule is
//! tested in-process.

pub mod auth;
pub mod aws;
pub mod config;
pub mod errors;
pub mod http;
pub mod ids;
pub mod mail;
pub mod provisioning;
pub mod remote;
pub mod signup;
pub mod store;
pub mod stripe;
pub mod subscription;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod webhook;
