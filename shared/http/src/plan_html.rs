//! The HTML of a billing entity's plan pages (`plans/`, `upgrade/`, `billing/`): server-rendered
//! forms that work without JavaScript, every field labelled, every error inline with
//! `role="alert"`. Everything interpolated is escaped by maud.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use billing::plans::purchase::{PendingUpgrade, UpgradeState, Usage, schedule_name};
use billing::plans::{Book, LicenseManagement, PlanStatus, Prices, Schedule, Tier, discounted, trial_offered};
use billing::remote::entity::EntitySession;

use crate::html::{csrf_field, layout};

/// What every plan page shows.
pub struct PlanPage<'a> {
    /// Whose pages, and who is logged in.
    pub session: &'a EntitySession,
    /// The entity's plans as of now.
    pub book: &'a Book,
    /// What its server last told us.
    pub usage: Usage,
    /// The newest upgrade asked for.
    pub upgrade: Option<&'a PendingUpgrade>,
    /// The list prices.
    pub prices: Prices,
    /// `SELF_HOSTED_FREE_TRIAL_DAYS`.
    pub trial_days: u32,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The upgrade form as sent, to fill it in again after an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeForm {
    /// `basic` or `business`.
    pub tier: String,
    /// `monthly` or `annual`.
    pub schedule: String,
    /// `automatic` or `manual`.
    pub license_management: String,
    /// The count typed.
    pub licenses: String,
}

/// A sum in cents as dollars.
pub fn dollars(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn day(at: DateTime<Utc>) -> String {
    at.format("%B %-d, %Y").to_string()
}

fn status_name(status: PlanStatus) -> &'static str {
    match status {
        PlanStatus::Active => "Active",
        PlanStatus::FreeTrial => "Free trial",
        PlanStatus::DowngradeAtEndOfCycle => "Ends at the end of this billing period",
        PlanStatus::DowngradeAtEndOfFreeTrial => "Ends at the end of the free trial",
        PlanStatus::SwitchPlanTierAtPlanEnd => "Switches plan at its end date",
        PlanStatus::NeverStarted => "Scheduled",
        PlanStatus::Ended => "Ended",
    }
}

fn nav(page: &PlanPage<'_>, current: &str) -> Markup {
    let base = &page.session.base_path;
    html! {
        nav aria-label="Billing pages" {
            ul class="nav" {
                @for (path, label) in [("plans", "Plans"), ("upgrade", "Upgrade"), ("billing", "Billing"), ("sponsorship", "Sponsorship")] {
                    li {
                        @if path == current {
                            a href={ (base) "/" (path) "/" } aria-current="page" { (label) }
                        } @else {
                            a href={ (base) "/" (path) "/" } { (label) }
                        }
                    }
                }
            }
        }
    }
}

fn header(page: &PlanPage<'_>, title: &str, current: &str) -> Markup {
    html! {
        (nav(page, current))
        h1 { (title) " for " (page.session.name) }
        p class="muted" { "Logged in as " (page.session.user.full_name) " (" (page.session.user.email) ")." }
    }
}

fn discount(page: &PlanPage<'_>) -> u8 {
    page.book.customer.default_discount
}

/// `plans/`: every tier with its price after discount, its minimum, and the trial offer.
pub fn plans(page: &PlanPage<'_>) -> String {
    let current = page.book.plan.as_ref().map(|plan| plan.tier);
    let percent = discount(page);
    layout(
        "Plans",
        html! {
            (header(page, "Plans", "plans"))
            @if percent > 0 {
                p { "Prices include your " (percent) "% discount." }
            }
            table id="tiers" {
                caption { "Price per license" }
                thead { tr { th scope="col" { "Plan" } th scope="col" { "Monthly" } th scope="col" { "Annual" } th scope="col" { "Minimum licenses" } th scope="col" {} } }
                tbody {
                    @for tier in [Tier::Basic, Tier::Business] {
                        tr id={ "tier-" (tier.as_str()) } {
                            th scope="row" { (tier.display_name()) }
                            td { (dollars(discounted(page.prices.list_price(tier, Schedule::Monthly), percent))) "/month" }
                            td { (dollars(discounted(page.prices.list_price(tier, Schedule::Annual), percent))) "/year" }
                            td { (tier.minimum_licenses()) }
                            td {
                                @if current == Some(tier) {
                                    strong { "Your plan" }
                                } @else if trial_offered(page.book, tier, page.trial_days) {
                                    (page.trial_days) "-day free trial"
                                }
                            }
                        }
                    }
                }
            }
            @if page.book.plan.is_none() {
                p { a href={ (page.session.base_path) "/upgrade/" } id="go-upgrade" { "Upgrade" } }
            }
        },
    )
}

fn radio(name: &str, value: &str, label: &str, chosen: &str) -> Markup {
    let id = format!("{name}-{value}");
    html! {
        div class="choice" {
            input type="radio" id=(id) name=(name) value=(value) checked[chosen == value] required;
            label for=(id) { (label) }
        }
    }
}

/// `upgrade/`: the purchase form, or why there is none.
pub fn upgrade(page: &PlanPage<'_>, form: &UpgradeForm, error: Option<&str>) -> String {
    let billed = page.usage.billed.unwrap_or(0);
    let percent = discount(page);
    let form = UpgradeForm {
        tier: if form.tier.is_empty() {
            "basic".into()
        } else {
            form.tier.clone()
        },
        schedule: if form.schedule.is_empty() {
            "monthly".into()
        } else {
            form.schedule.clone()
        },
        license_management: if form.license_management.is_empty() {
            "automatic".into()
        } else {
            form.license_management.clone()
        },
        licenses: form.licenses.clone(),
    };
    let minimum_basic = billed.max(Tier::Basic.minimum_licenses());
    layout(
        "Upgrade",
        html! {
            (header(page, "Upgrade", "upgrade"))
            @if let Some(message) = error {
                p role="alert" class="error" id="upgrade-error" { (message) }
            }
            @let legacy_end = page.book.plan.as_ref().filter(|plan| plan.tier == Tier::Legacy && page.book.next_plan.is_none()).and_then(|plan| plan.end_date);
            @if let Some(next) = &page.book.next_plan {
                p id="has-plan" { "An upgrade to " (next.tier.display_name()) " is scheduled for " (day(next.billing_cycle_anchor)) ". " a href={ (page.session.base_path) "/billing/" } { "See your billing" } "." }
            } @else if let (Some(plan), None) = (&page.book.plan, legacy_end) {
                p id="has-plan" { "You are on " (plan.tier.display_name()) ". " a href={ (page.session.base_path) "/billing/" } { "See your billing" } "." }
            } @else {
                @if let Some(end) = legacy_end {
                    p id="legacy-notice" { "Your complimentary plan ends on " strong { (day(end)) } ". The plan you choose here starts then, without a free trial, and is first charged then." }
                }
                p { "Your server reports " strong id="billed-count" { (billed) } " users. Every user needs a license." }
                @if page.book.customer.card_last4.is_none() {
                    p { "You will be asked for a card by Stripe before anything is charged." }
                }
                form method="post" action={ (page.session.base_path) "/upgrade/" } {
                    (csrf_field(&page.session.csrf))
                    fieldset {
                        legend { "Plan" }
                        @for tier in [Tier::Basic, Tier::Business] {
                            @let price = discounted(page.prices.list_price(tier, Schedule::Monthly), percent);
                            @let minimum = tier.minimum_licenses();
                            @let label = format!("{} ({}/license/month, at least {} license{}{})", tier.display_name(), dollars(price), minimum, if minimum == 1 { "" } else { "s" },
                                if trial_offered(page.book, tier, page.trial_days) { format!("; {}-day free trial", page.trial_days) } else { String::new() });
                            (radio("tier", tier.as_str(), &label, &form.tier))
                        }
                    }
                    fieldset {
                        legend { "Billing period" }
                        (radio("schedule", "monthly", "Monthly", &form.schedule))
                        (radio("schedule", "annual", "Annual", &form.schedule))
                    }
                    fieldset {
                        legend { "Licenses" }
                        (radio("license_management", "automatic", "Automatic: follow my users", &form.license_management))
                        (radio("license_management", "manual", "Manual: I choose the number", &form.license_management))
                        label for="licenses" { "Number of licenses (manual only; at least " (minimum_basic) " on Basic, " (billed.max(Tier::Business.minimum_licenses())) " on Business)" }
                        input type="number" id="licenses" name="licenses" min="1" max="1000000" inputmode="numeric" autocomplete="off" value=(form.licenses);
                    }
                    button type="submit" id="upgrade" { @if legacy_end.is_some() { "Schedule upgrade" } @else { "Upgrade" } }
                }
            }
        },
    )
}

fn upgrade_notice(page: &PlanPage<'_>) -> Markup {
    let Some(upgrade) = page.upgrade else {
        return html! {};
    };
    if page.book.plan.as_ref().is_some_and(|plan| plan.id == upgrade.id) {
        return html! {};
    }
    html! {
        @match &upgrade.state {
            UpgradeState::AwaitingCard => {
                p role="status" id="upgrade-pending" { "Your upgrade to " (upgrade.tier.display_name()) " is waiting for Stripe to confirm your card. Reload this page in a moment." }
            }
            UpgradeState::Declined { message } => {
                p role="alert" class="error" id="upgrade-declined" { "Your upgrade to " (upgrade.tier.display_name()) " did not go through: " (message) " Nothing was charged." }
            }
            UpgradeState::Refused { message } => {
                p role="alert" class="error" id="upgrade-refused" { "Your upgrade to " (upgrade.tier.display_name()) " could not be made: " (message) }
            }
            UpgradeState::Started => {}
        }
    }
}

/// `billing/`: the plan, its licenses and next invoice, the card, and the forms that change
/// them.
pub fn billing(page: &PlanPage<'_>, error: Option<&str>, notice: Option<&str>) -> String {
    let base = &page.session.base_path;
    layout(
        "Billing",
        html! {
            (header(page, "Billing", "billing"))
            @if let Some(message) = error {
                p role="alert" class="error" id="billing-error" { (message) }
            }
            @if let Some(message) = notice {
                p role="status" id="billing-notice" { (message) }
            }
            (upgrade_notice(page))
            @match (&page.book.plan, page.book.last_row()) {
                (Some(plan), Some(last)) => {
                    @let renews = !matches!(plan.status, PlanStatus::DowngradeAtEndOfCycle | PlanStatus::DowngradeAtEndOfFreeTrial);
                    table id="plan" {
                        tr { th scope="row" { "Plan" } td id="plan-tier" { (plan.tier.display_name()) } }
                        tr { th scope="row" { "Status" } td id="plan-status" { (status_name(plan.status)) } }
                        tr { th scope="row" { "Billing period" } td id="plan-schedule" { (schedule_name(plan.schedule)) } }
                        tr { th scope="row" { "Licenses" } td id="plan-licenses" { (last.licenses) } }
                        tr { th scope="row" { "Licenses at next renewal" } td id="plan-next-licenses" { (last.licenses_at_next_renewal) } }
                        tr { th scope="row" { "Price per license" } td id="plan-price" { (dollars(plan.price_per_license)) } }
                        @if plan.discount_percent > 0 {
                            tr { th scope="row" { "Discount" } td id="plan-discount" { (plan.discount_percent) "%" } }
                        }
                        @if let Some(next) = plan.next_invoice_date {
                            tr { th scope="row" { "Next invoice" } td id="plan-next-invoice" {
                                (day(next))
                                @if renews && plan.price_per_license > 0 { ", about " (dollars(u64::from(last.licenses_at_next_renewal) * plan.price_per_license)) " for the renewal" }
                            } }
                        }
                        tr { th scope="row" { "Card" } td id="plan-card" {
                            @match &page.book.customer.card_last4 { Some(last4) => { "Card ending in " (last4) } None => { "None saved" } }
                        } }
                        @if plan.license_management == LicenseManagement::Automatic {
                            tr { th scope="row" { "Users reported" } td id="billed-count" { (page.usage.billed.unwrap_or(0)) } }
                        }
                    }
                    @if plan.license_management == LicenseManagement::Manual && renews {
                        h2 { "Change licenses" }
                        @if plan.status != PlanStatus::FreeTrial {
                            form method="post" action={ (base) "/billing/" } {
                                (csrf_field(&page.session.csrf))
                                input type="hidden" name="action" value="licenses";
                                label for="licenses" { "Licenses for this period (can only go up; the increase is billed prorated)" }
                                input type="number" id="licenses" name="licenses" min=(last.licenses) inputmode="numeric" autocomplete="off" required value=(last.licenses);
                                button type="submit" id="update-licenses" { "Update licenses" }
                            }
                        }
                        form method="post" action={ (base) "/billing/" } {
                            (csrf_field(&page.session.csrf))
                            input type="hidden" name="action" value="licenses_at_next_renewal";
                            label for="licenses_at_next_renewal" { "Licenses at next renewal" }
                            input type="number" id="licenses_at_next_renewal" name="licenses_at_next_renewal" min="1" inputmode="numeric" autocomplete="off" required value=(last.licenses_at_next_renewal);
                            button type="submit" id="update-next-licenses" { "Update next renewal" }
                        }
                    }
                    h2 { "Plan changes" }
                    @if plan.tier == Tier::Legacy {
                        @if let Some(next) = &page.book.next_plan {
                            p id="scheduled-plan" {
                                (next.tier.display_name()) " (" (schedule_name(next.schedule)) ", "
                                @match next.scheduled_licenses { Some(count) => { (count) " licenses" } None => { "licenses following your users" } }
                                ", " (dollars(next.price_per_license)) " a license) starts on " (day(next.billing_cycle_anchor)) "."
                            }
                            form method="post" action={ (base) "/billing/" } {
                                (csrf_field(&page.session.csrf))
                                input type="hidden" name="action" value="undo";
                                button type="submit" id="cancel-scheduled-upgrade" { "Cancel the scheduled upgrade" }
                            }
                        } @else {
                            p { "Complimentary until " (plan.end_date.map(day).unwrap_or_default()) ". " a href={ (base) "/upgrade/" } { "Schedule an upgrade" } "." }
                        }
                    } @else {
                    form method="post" action={ (base) "/billing/" } {
                        (csrf_field(&page.session.csrf))
                        @if renews {
                            input type="hidden" name="action" value="cancel";
                            p { "Cancelling keeps the plan until the end of the current period; nothing more is charged." }
                            button type="submit" id="cancel-plan" { "Cancel plan" }
                        } @else {
                            input type="hidden" name="action" value="undo";
                            p { "The plan ends on " (plan.next_invoice_date.map(day).unwrap_or_default()) "." }
                            button type="submit" id="undo-cancel" { "Keep my plan" }
                        }
                    }
                    }
                }
                _ => {
                    p id="no-plan" { "You are on the free Self-managed plan. " a href={ (base) "/plans/" } { "See plans" } "." }
                }
            }
            @if page.usage.last_upload.is_some_and(|at| page.now - at > billing::plans::purchase::FRESH_DATA) {
                p role="alert" class="error" id="stale-data" { "Your server has not sent its usage data for more than two days; invoices wait until it does." }
            }
        },
    )
}

/// The sponsorship form as sent, to fill it in again after an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SponsorshipForm {
    /// One of [`billing::plans::purchase::SPONSORSHIP_ORG_TYPES`].
    pub org_type: String,
    /// The organization's website.
    pub website: String,
    /// What it does.
    pub description: String,
    /// Users it expects.
    pub expected_total_users: String,
    /// Users it pays for today.
    pub paid_users_count: String,
    /// The plan it would use.
    pub plan_to_use: String,
}

/// `sponsorship/`: the request form, or where the request stands.
pub fn sponsorship(page: &PlanPage<'_>, form: &SponsorshipForm, error: Option<&str>, notice: Option<&str>) -> String {
    let sponsored = page.book.plan.as_ref().is_some_and(|plan| plan.tier == Tier::Community)
        || page
            .book
            .next_plan
            .as_ref()
            .is_some_and(|plan| plan.tier == Tier::Community);
    layout(
        "Sponsorship",
        html! {
            (header(page, "Sponsorship", "sponsorship"))
            @if let Some(message) = error {
                p role="alert" class="error" id="sponsorship-error" { (message) }
            }
            @if let Some(message) = notice {
                p role="status" id="sponsorship-notice" { (message) }
            }
            @if sponsored {
                p id="sponsored" { "This organization is sponsored: it is on the Community plan." }
            } @else if page.book.customer.sponsorship_pending {
                p id="sponsorship-pending" { "Your sponsorship request is being reviewed; we will email you the decision." }
            } @else {
                p { "Open-source projects, non-profits, education and research can ask for the Community plan, free of charge." }
                form method="post" action={ (page.session.base_path) "/sponsorship/" } {
                    (csrf_field(&page.session.csrf))
                    label for="org_type" { "Type of organization" }
                    select id="org_type" name="org_type" required {
                        @for (value, label) in [("opensource", "Open-source project"), ("nonprofit", "Non-profit"), ("education", "Education"), ("research", "Research"), ("event", "Event"), ("other", "Other")] {
                            option value=(value) selected[form.org_type == value] { (label) }
                        }
                    }
                    label for="website" { "Website (optional)" }
                    input type="url" id="website" name="website" autocomplete="url" maxlength="200" value=(form.website);
                    label for="description" { "What the organization does" }
                    textarea id="description" name="description" required maxlength="2000" rows="5" { (form.description) }
                    label for="expected_total_users" { "Users you expect" }
                    input type="number" id="expected_total_users" name="expected_total_users" min="1" inputmode="numeric" autocomplete="off" required value=(form.expected_total_users);
                    label for="paid_users_count" { "Users you pay for today" }
                    input type="number" id="paid_users_count" name="paid_users_count" min="0" inputmode="numeric" autocomplete="off" required value=(form.paid_users_count);
                    label for="plan_to_use" { "Plan you would use" }
                    select id="plan_to_use" name="plan_to_use" required {
                        @for (value, label) in [("community", "Community"), ("basic", "Basic"), ("business", "Business")] {
                            option value=(value) selected[form.plan_to_use == value] { (label) }
                        }
                    }
                    button type="submit" id="request-sponsorship" { "Request sponsorship" }
                }
            }
        },
    )
}
