//! The text of every mail the service sends. Each function takes what the mail mentions and
//! returns the whole [`Mail`], so a wording change is one edit here and tests can compare
//! against these same functions.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Mail;

/// To a subscriber whose free trial ends within days (`customer.subscription.trial_will_end`).
/// `ends` is the end of the trial when known.
pub fn trial_ending(to: &str, ends: Option<DateTime<Utc>>) -> Mail {
    let ends = ends.map_or_else(|| "soon".to_owned(), |end| format!("on {}", end.format("%B %-d, %Y")));
    Mail {
        to: to.to_owned(),
        subject: "Your free trial ends soon".to_owned(),
        text: format!(
            "Hello,\n\nyour free trial ends {ends}. Choose a plan and add a payment method to keep your account running \
             without interruption.\n"
        ),
    }
}

/// To a subscriber whose payment needs them (3-D Secure): the invoice's page, where they
/// complete it (`invoice.payment_action_required`).
pub fn payment_action_required(to: &str, invoice_url: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Confirm your payment".to_owned(),
        text: format!(
            "Hello,\n\nyour bank asks you to confirm your latest payment. Open the invoice below and follow the steps \
             to complete it; until then your subscription is past due.\n\n{invoice_url}\n"
        ),
    }
}

/// To a billing user who asked to log in: the one-time confirmation link for `realm_host`.
pub fn login_confirmation(to: &str, realm_host: &str, link: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Confirm your email to log in to billing for {realm_host}"),
        text: format!(
            "Click the link below to confirm your email and log in to billing for {realm_host}.\n\n{link}\n\n\
             The link works once, within 24 hours. If you did not ask for it, ignore this mail.\n"
        ),
    }
}

/// To a server's contact: the login link that leads to deactivating `hostname` from billing.
pub fn deactivation_link(to: &str, hostname: &str, server_uuid: Uuid, link: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Deactivate {hostname} from billing"),
        text: format!(
            "An administrator asked to deactivate the server {hostname} ({server_uuid}) from billing.\n\n\
             Log in within two hours to confirm: {link}\n\n\
             If this was not expected, ignore this mail; nothing changes until you confirm.\n"
        ),
    }
}

/// A sponsorship request was approved: the organization is on the Community plan.
pub fn sponsorship_approved(to: &str, name: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("{name} is sponsored: Community plan"),
        text: format!(
            "Your sponsorship request for {name} was approved.\n\n\
             It is on the Community plan now, or, if it has a paid plan, when that plan's current \
             billing period ends; nothing more will be charged after that.\n"
        ),
    }
}
