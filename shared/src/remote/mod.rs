//! Remote billing: self-hosted servers sending their organisations' administrators into
//! billing. This module will own remote servers, realms, billing users, confirmations and
//! sessions; so far it has the signed, encrypted access tokens those steps pass around.

pub mod token;
