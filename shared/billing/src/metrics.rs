//! The service's own metrics: what each one counts, and the one place their names and labels
//! are spelled (the template's dashboard and alarms use the same names; a test compares them).
//!
//! They are recorded through the `metrics` facade, so the domain depends on no backend: without
//! a recorder installed (tests, the local server) a count costs one atomic load; a Lambda
//! function installs the CloudWatch Embedded Metric Format recorder of
//! `billing_adapters::metrics` and flushes it after each invocation. Every label is a
//! CloudWatch dimension, so labels only take values from short fixed lists, never ids.

/// Stripe events received (webhook, EventBridge or replay), by `Outcome`: `applied`, `received`
/// (handled before), `failed` (the sender delivers again) or what was recorded (`stale`,
/// `ignored`, `unknown_subscription`, ...).
pub const STRIPE_EVENTS: &str = "StripeEvents";
/// Stripe calls attempted again after a network error, a timeout, a 5xx or a 429.
pub const STRIPE_RETRIES: &str = "StripeRetries";
/// Stripe calls that failed for good, by `Reason`: `unavailable` (attempts or time ran out) or
/// `refused` (a 4xx: a declined card, a bad request).
pub const STRIPE_FAILURES: &str = "StripeFailures";
/// Signup messages handled, by `Outcome`: `created`, `already_exists`, `ignored`, `retry` (handed
/// back to SQS) or `poison` (on its way to the dead-letter queue).
pub const SIGNUPS: &str = "Signups";
/// Mails handed to the mail service, by `Outcome`: `sent` or `failed`.
pub const MAILS: &str = "Mails";
/// Licence ledgers synced from a server's usage upload (one per plan that follows its users).
pub const LEDGER_SYNCS: &str = "LedgerSyncs";
/// Ledger rows those syncs appended.
pub const LEDGER_ROWS: &str = "LedgerRows";
/// Due self-hosted plans met by the hourly invoicing, by `Outcome`: `invoiced`, `deferred` (no
/// upload since the due date), `failed` (its run is resumed by the next job) or
/// `needs_attention` (its run failed three times or stayed open six hours: an alarm), and,
/// beside `deferred`, `waiting_for_upload` for a plan deferred for over a week.
pub const PLAN_INVOICES: &str = "PlanInvoices";

/// The label of a count's outcome.
pub const OUTCOME: &str = "Outcome";
/// The label of a failure's reason.
pub const REASON: &str = "Reason";

/// Every metric with the labels it is recorded with, for the checks of the template.
pub const ALL: &[(&str, &[&str])] = &[
    (STRIPE_EVENTS, &[OUTCOME]),
    (STRIPE_RETRIES, &[]),
    (STRIPE_FAILURES, &[REASON]),
    (SIGNUPS, &[OUTCOME]),
    (MAILS, &[OUTCOME]),
    (LEDGER_SYNCS, &[]),
    (LEDGER_ROWS, &[]),
    (PLAN_INVOICES, &[OUTCOME]),
    (PLAN_INVOICES_ENQUEUED, &[]),
    (INVOICING_RUNS, &[]),
    (WEBHOOK_SIGNATURE_FAILURES, &[]),
];

/// Counts one Stripe event by its outcome.
pub fn stripe_event(outcome: &str) {
    metrics::counter!(STRIPE_EVENTS, OUTCOME => outcome.to_owned()).increment(1);
}

/// Counts one Stripe call attempted again.
pub fn stripe_retry() {
    metrics::counter!(STRIPE_RETRIES).increment(1);
}

/// Counts one Stripe call that failed for good.
pub fn stripe_failure(reason: &'static str) {
    metrics::counter!(STRIPE_FAILURES, REASON => reason).increment(1);
}

/// Counts one signup message by its outcome.
pub fn signup(outcome: &'static str) {
    metrics::counter!(SIGNUPS, OUTCOME => outcome).increment(1);
}

/// Counts one mail by whether the mail service took it.
pub fn mail(sent: bool) {
    metrics::counter!(MAILS, OUTCOME => if sent { "sent" } else { "failed" }).increment(1);
}

/// Counts one ledger sync and the rows it appended.
pub fn ledger_synced(rows: usize) {
    metrics::counter!(LEDGER_SYNCS).increment(1);
    metrics::counter!(LEDGER_ROWS).increment(rows as u64);
}

/// Counts one due plan by what the invoicing did with it.
pub fn plan_invoice(outcome: &'static str) {
    metrics::counter!(PLAN_INVOICES, OUTCOME => outcome).increment(1);
}

/// Entities the invoicing scheduler handed to the invoicing queue.
pub const PLAN_INVOICES_ENQUEUED: &str = "PlanInvoicesEnqueued";

/// Counts `count` entities enqueued by one scheduler run.
pub fn plan_invoices_enqueued(count: usize) {
    metrics::counter!(PLAN_INVOICES_ENQUEUED).increment(count as u64);
}

/// Invoicing runs (the hourly scheduler) that finished; an alarm watches for none in 26 hours.
pub const INVOICING_RUNS: &str = "InvoicingRuns";

/// Counts one finished invoicing run.
pub fn invoicing_run() {
    metrics::counter!(INVOICING_RUNS).increment(1);
}

/// Webhook deliveries refused for their signature: a wrong `STRIPE_WEBHOOK_SECRET` refuses
/// every one (and Stripe retries them for three days), so an alarm reads this.
pub const WEBHOOK_SIGNATURE_FAILURES: &str = "WebhookSignatureFailures";

/// Counts one webhook delivery refused for its signature.
pub fn webhook_signature_failure() {
    metrics::counter!(WEBHOOK_SIGNATURE_FAILURES).increment(1);
}
