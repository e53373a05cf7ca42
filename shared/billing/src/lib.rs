//! The billing domain: the model and its rules, the ports (traits) the rules need, and the use
//! cases that tie them together.
//!
//! Nothing here performs I/O of its own: stores, Stripe and mail are ports implemented in
//! `billing-adapters`, time comes from a [`clock::Clock`], and HTTP lives in `billing-http`. The
//! crate depends on no AWS SDK, no Stripe client, no Lambda runtime and no HTML library, so the
//! compiler keeps it pure and every rule is tested in-process (see `tests/`).

#![warn(missing_docs)]

pub mod access;
pub mod audit;
pub mod auth;
pub mod body;
pub mod change;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod errors;
pub mod idempotency;
pub mod ids;
pub mod lifecycle;
pub mod limits;
pub mod listing;
pub mod mail;
pub mod metrics;
pub mod paging;
pub mod plans;
pub mod provisioning;
pub mod remote;
pub mod signup;
pub mod store;
pub mod stripe;
pub mod subscription;
pub mod webhook;
