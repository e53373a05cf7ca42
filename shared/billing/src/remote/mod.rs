//! Remote billing: self-hosted servers sending their organisations' administrators into
//! billing without this service ever seeing the servers' passwords.
//!
//! This module owns remote servers, realms, billing users, email confirmations, sessions and
//! mail rate counters ([`records`]), the sealed access tokens and CSRF tokens ([`token`]), the
//! flows that tie them together ([`service`]). The HTML of the browser steps is in `billing-http`.

pub mod admin;
pub mod entity;
pub mod records;
pub mod service;
pub mod token;
pub mod usage;

pub use records::{BillingUser, RealmPlan, Records, RemoteRealm, RemoteServer, Session};
pub use service::{
    BillingLinkRequest, LoggedIn, LoginForm, LoginView, RateLimit, RealmView, RegisterRequest, RemoteBilling,
    RemoteError, RemoteSettings, ServerView, TERMS_OF_SERVICE_MAJOR,
};
pub use token::{AccessClaims, NextPage, TokenSealer};
