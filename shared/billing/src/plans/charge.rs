//! Making one invoice of ours in Stripe, exactly once, from whatever a fault left behind.
//!
//! Every money path (the invoicing run, a purchase's first period) knows the invoice it wants
//! before its first Stripe call: the customer, a reference naming it (`invoicing:<plan>:<due>`,
//! `upgrade:<id>`) and its exact lines, stored beforehand. [`charge`] then walks Stripe from
//! what Stripe holds, not from idempotency keys, which Stripe may forget after 24 hours:
//!
//! 1. the invoice: the one already recorded, else the customer's invoice whose metadata names
//!    the reference, else a new draft that takes none of the customer's pending items;
//! 2. while it is a draft, each line whose key is not on it yet is added to it (the key is in
//!    the item's metadata), then it is finalized;
//! 3. while it is open, it is paid.
//!
//! Each step reads before it writes, so a re-run a minute or a day later makes no second
//! invoice, no second item and no second charge; the keys only make a retry within the same
//! day cheaper.

use super::InvoiceItem;
use crate::stripe::{Billing, BillingError, HeldInvoice, InvoiceStatus};

/// The invoice a money path wants, as it was stored before the first Stripe call.
#[derive(Clone, Copy, Debug)]
pub struct InvoiceSpec<'a> {
    /// The Stripe customer charged.
    pub customer: &'a str,
    /// What names the invoice in its metadata, and roots its idempotency keys.
    pub reference: &'a str,
    /// What the invoice says it is for.
    pub description: &'a str,
    /// Its lines, each with its own key.
    pub lines: &'a [InvoiceItem],
    /// Whether Stripe may collect it on its own once finalized (renewals: Stripe's retries
    /// then apply). A purchase leaves it off, so nothing is charged for a plan that was not
    /// made. Drafts never auto-advance: Stripe would finalize one before its lines are on.
    pub auto_advance: bool,
}

/// Where the invoice ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Charged {
    /// Paid (or nothing was owed).
    Paid {
        /// `in_...`.
        invoice: String,
    },
    /// Finalized, and the card was declined: the invoice is open.
    Declined {
        /// `in_...`.
        invoice: String,
        /// What Stripe said.
        message: String,
    },
    /// Voided (a declined purchase, voided by an earlier attempt): nothing is owed.
    Voided {
        /// `in_...`.
        invoice: String,
    },
}

impl Charged {
    /// The invoice.
    pub fn invoice(&self) -> &str {
        match self {
            Charged::Paid { invoice } | Charged::Declined { invoice, .. } | Charged::Voided { invoice } => invoice,
        }
    }
}

/// Takes the invoice of `spec` as far as it goes: made, its lines on it, finalized, paid.
/// `known` is its id when an earlier attempt recorded it.
pub async fn charge(
    billing: &dyn Billing,
    spec: InvoiceSpec<'_>,
    known: Option<&str>,
) -> Result<Charged, BillingError> {
    let mut invoice = match known {
        Some(id) => billing.retrieve_invoice(id).await?,
        None => match billing.find_invoice(spec.customer, spec.reference).await? {
            Some(found) => found,
            None => {
                billing
                    .create_invoice(
                        spec.customer,
                        spec.reference,
                        spec.description,
                        &format!("{}:create", spec.reference),
                    )
                    .await?
            }
        },
    };
    if invoice.status == InvoiceStatus::Draft {
        add_missing_lines(billing, &spec, &invoice).await?;
        invoice = billing
            .finalize_invoice(&invoice.id, spec.auto_advance, &format!("{}:finalize", spec.reference))
            .await?;
    } else if let Some(missing) = spec
        .lines
        .iter()
        .find(|line| !invoice.lines.contains(&line.idempotency_key))
    {
        // Finalized without one of its lines (by hand, in the Dashboard): what is owed and
        // what Stripe holds differ, and only a person can say which is right.
        return Err(BillingError::Rejected(format!(
            "invoice {} was finalized without its line {}",
            invoice.id, missing.idempotency_key
        )));
    }
    match invoice.status {
        InvoiceStatus::Open => match billing
            .pay_invoice(&invoice.id, &format!("{}:pay", spec.reference))
            .await
        {
            Ok(_) => Ok(Charged::Paid { invoice: invoice.id }),
            Err(BillingError::CardDeclined(message)) => Ok(Charged::Declined {
                invoice: invoice.id,
                message,
            }),
            Err(other) => Err(other),
        },
        InvoiceStatus::Paid => Ok(Charged::Paid { invoice: invoice.id }),
        InvoiceStatus::Void | InvoiceStatus::Uncollectible => Ok(Charged::Voided { invoice: invoice.id }),
        InvoiceStatus::Draft => Err(BillingError::Rejected(format!(
            "invoice {} is still a draft after finalizing",
            invoice.id
        ))),
    }
}

async fn add_missing_lines(
    billing: &dyn Billing,
    spec: &InvoiceSpec<'_>,
    invoice: &HeldInvoice,
) -> Result<(), BillingError> {
    for line in spec.lines {
        if invoice.lines.contains(&line.idempotency_key) {
            continue;
        }
        billing
            .add_invoice_line(spec.customer, &invoice.id, line, &line.idempotency_key)
            .await?;
    }
    Ok(())
}

/// Voids the open invoice of a purchase whose card was declined: nothing is owed for a plan
/// that did not start. Safe to repeat: a voided invoice is left as it is.
pub async fn void_declined(billing: &dyn Billing, reference: &str, invoice: &str) -> Result<(), BillingError> {
    let held = billing.retrieve_invoice(invoice).await?;
    if held.status == InvoiceStatus::Open {
        billing.void_invoice(invoice, &format!("{reference}:void")).await?;
    }
    Ok(())
}
