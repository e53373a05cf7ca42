//! Self-hosted plans (API.md, "Remote billing plans"): what a billing entity (a remote realm or
//! a remote server) buys, its customer record, its plans and their append-only license ledger,
//! and the use cases over them — [`upgrade`], [`update_licenses`], [`end_of_cycle`],
//! [`sync_ledger`], [`invoice_plan`] — each a pure function of the stored state, its inputs and
//! the time it is given. Nothing here talks to a store or to Stripe: the caller loads a
//! [`Book`], runs a use case, and writes what it returns (new ledger rows are only ever
//! appended), so the rules are tested with the numbers of Zulip's own tests.

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who pays: a realm, or (for servers too old to upload realms) a whole server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "uuid", rename_all = "snake_case")]
pub enum Entity {
    /// A remote realm.
    Realm(Uuid),
    /// A remote server.
    Server(Uuid),
}

/// What a plan offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// No plan: the default.
    SelfManaged,
    /// Complimentary until an end date, set by an administrator.
    Legacy,
    /// Sponsored.
    Community,
    /// The paid tier with a free trial.
    Basic,
    /// The larger paid tier.
    Business,
}

impl Tier {
    /// The name in forms and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::SelfManaged => "self_managed",
            Tier::Legacy => "legacy",
            Tier::Community => "community",
            Tier::Basic => "basic",
            Tier::Business => "business",
        }
    }

    /// A tier from its name.
    pub fn parse(text: &str) -> Option<Tier> {
        [
            Tier::SelfManaged,
            Tier::Legacy,
            Tier::Community,
            Tier::Basic,
            Tier::Business,
        ]
        .into_iter()
        .find(|tier| tier.as_str() == text)
    }

    /// Whether it is bought (and so invoiced).
    pub fn is_paid(self) -> bool {
        matches!(self, Tier::Basic | Tier::Business)
    }

    /// The fewest licenses a plan of this tier bills.
    pub fn minimum_licenses(self) -> u32 {
        match self {
            Tier::Business => 25,
            _ => 1,
        }
    }

    /// What people call it on invoices.
    pub fn display_name(self) -> &'static str {
        match self {
            Tier::SelfManaged => "Self-managed",
            Tier::Legacy => "Legacy (complimentary)",
            Tier::Community => "Community",
            Tier::Basic => "Basic",
            Tier::Business => "Business",
        }
    }
}

/// How often a plan renews.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Every month.
    Monthly,
    /// Every year.
    Annual,
}

impl Schedule {
    /// Months in one period.
    pub fn months(self) -> u32 {
        match self {
            Schedule::Monthly => 1,
            Schedule::Annual => 12,
        }
    }
}

/// Who decides the license count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseManagement {
    /// The count follows the users the server reports.
    Automatic,
    /// The owner sets it.
    Manual,
}

/// Where a plan is in its life. "Live" is every status but `NeverStarted` and `Ended`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Billed and renewing.
    Active,
    /// In its free trial: nothing charged until the trial ends.
    FreeTrial,
    /// Ends at the end of its period (the entity goes back to `self_managed`).
    DowngradeAtEndOfCycle,
    /// A trial that ends at its end, never charged (Zulip's `downgrade_at_end_of_free_trial`).
    DowngradeAtEndOfFreeTrial,
    /// Ends at its end date, when its `never_started` successor starts.
    SwitchPlanTierAtPlanEnd,
    /// A scheduled next plan.
    NeverStarted,
    /// Over.
    Ended,
}

impl PlanStatus {
    /// Whether the plan is the entity's current one.
    pub fn is_live(self) -> bool {
        !matches!(self, PlanStatus::NeverStarted | PlanStatus::Ended)
    }
}

/// List prices per license, in cents (API.md's table; configuration may override them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prices {
    /// `basic`, monthly.
    pub basic_monthly: u64,
    /// `basic`, annual.
    pub basic_annual: u64,
    /// `business`, monthly.
    pub business_monthly: u64,
    /// `business`, annual.
    pub business_annual: u64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            basic_monthly: 350,
            basic_annual: 4_200,
            business_monthly: 800,
            business_annual: 8_000,
        }
    }
}

impl Prices {
    /// The list price of a license of `tier` on `schedule`; free tiers cost nothing.
    pub fn list_price(&self, tier: Tier, schedule: Schedule) -> u64 {
        match (tier, schedule) {
            (Tier::Basic, Schedule::Monthly) => self.basic_monthly,
            (Tier::Basic, Schedule::Annual) => self.basic_annual,
            (Tier::Business, Schedule::Monthly) => self.business_monthly,
            (Tier::Business, Schedule::Annual) => self.business_annual,
            _ => 0,
        }
    }
}

/// A license's price after a percentage discount: `floor(price × (100 − d) / 100)` (Stripe has
/// no fractional cents; rounding down never charges more than the discount promises).
pub fn discounted(price: u64, discount_percent: u8) -> u64 {
    price * u64::from(100 - discount_percent.min(100)) / 100
}

/// A billing entity's customer record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Who it is.
    pub entity: Entity,
    /// The Stripe customer, once made.
    pub stripe_customer: Option<String>,
    /// The discount every plan of the customer gets, in percent (0 to 99).
    pub default_discount: u8,
    /// Whether a sponsorship request awaits review.
    pub sponsorship_pending: bool,
    /// The last four digits of the card invoices are charged to, once one is saved.
    #[serde(default)]
    pub card_last4: Option<String>,
}

impl Customer {
    /// A customer with no Stripe customer, discount or sponsorship request yet.
    pub fn new(entity: Entity) -> Self {
        Customer {
            entity,
            stripe_customer: None,
            default_discount: 0,
            sponsorship_pending: false,
            card_last4: None,
        }
    }
}

/// A plan of a billing entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Its id.
    pub id: Uuid,
    /// Whose.
    pub entity: Entity,
    /// What it offers.
    pub tier: Tier,
    /// How often it renews.
    pub schedule: Schedule,
    /// Who sets the license count.
    pub license_management: LicenseManagement,
    /// Cents per license, discount applied.
    pub price_per_license: u64,
    /// The discount `price_per_license` has, for display.
    pub discount_percent: u8,
    /// Periods start at this time plus whole periods (a trial's end resets it).
    pub billing_cycle_anchor: DateTime<Utc>,
    /// When it is next invoiced; none for plans never invoiced (legacy, community).
    pub next_invoice_date: Option<DateTime<Utc>>,
    /// When it ends (legacy plans).
    pub end_date: Option<DateTime<Utc>>,
    /// Where it is in its life.
    pub status: PlanStatus,
    /// The last ledger row invoiced.
    pub invoiced_through: Option<u32>,
    /// For a `never_started` manual plan: the license count its owner chose.
    pub scheduled_licenses: Option<u32>,
}

/// One row of a plan's license ledger. Rows are appended, never changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    /// The plan's.
    pub plan: Uuid,
    /// Its position in the plan's ledger, from 1.
    pub seq: u32,
    /// When it took effect.
    pub event_time: DateTime<Utc>,
    /// Whether it starts a period (the first row of a plan does too).
    pub is_renewal: bool,
    /// Licenses paid for in this period: never lower than the row before within a period.
    pub licenses: u32,
    /// Licenses the next period will start with.
    pub licenses_at_next_renewal: u32,
}

impl LedgerRow {
    /// The id its invoice item is keyed by (`ledger_entry:<row id>`).
    pub fn id(&self) -> String {
        format!("{}-{}", self.plan, self.seq)
    }
}

/// What is stored of one billing entity's plans: its customer, its live plan and a scheduled
/// next one, each with its ledger, and whether it ever had a plan (for trials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Book {
    /// The customer record.
    pub customer: Customer,
    /// The live plan, if any.
    pub plan: Option<Plan>,
    /// The live plan's ledger, oldest first.
    pub ledger: Vec<LedgerRow>,
    /// A `never_started` plan that follows the live one.
    pub next_plan: Option<Plan>,
    /// Whether the entity has or ever had a plan, legacy included.
    pub ever_had_plan: bool,
}

impl Book {
    /// An entity that never had a plan.
    pub fn new(entity: Entity) -> Self {
        Book {
            customer: Customer::new(entity),
            plan: None,
            ledger: Vec::new(),
            next_plan: None,
            ever_had_plan: false,
        }
    }

    /// The last row of the live plan's ledger.
    pub fn last_row(&self) -> Option<&LedgerRow> {
        self.ledger.last()
    }

    fn append(&mut self, event_time: DateTime<Utc>, is_renewal: bool, licenses: u32, next: u32) -> LedgerRow {
        let plan = self.plan.as_ref().map_or(Uuid::nil(), |p| p.id);
        let row = LedgerRow {
            plan,
            seq: self.ledger.last().map_or(1, |r| r.seq + 1),
            event_time,
            is_renewal,
            licenses,
            licenses_at_next_renewal: next,
        };
        self.ledger.push(row);
        row
    }
}

/// What a use case changed: plans to write, rows to append (in order), plans that ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Ledger rows appended.
    pub rows: Vec<LedgerRow>,
    /// Plans that ended (kept for the record; the book no longer holds them).
    pub ended: Vec<Plan>,
}

impl Changes {
    fn extend(&mut self, other: Changes) {
        self.rows.extend(other.rows);
        self.ended.extend(other.ended);
    }
}

/// Why a plan use case refused. Nothing changed in any of these cases.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Only `basic` and `business` are bought.
    #[error("{0} is not a tier that can be bought")]
    NotForSale(&'static str),
    /// Fewer licenses than users, or than the tier's minimum.
    #[error("You must purchase licenses for all active users in your organization (minimum {minimum}).")]
    TooFewLicenses {
        /// `max(billed count, tier minimum)`.
        minimum: u32,
    },
    /// A manual plan needs a license count.
    #[error("a plan with manual license management needs a license count")]
    LicensesRequired,
    /// The entity already has a live plan.
    #[error("this organization already has a plan")]
    AlreadyHasPlan,
    /// No live plan to change.
    #[error("this organization has no plan")]
    NoPlan,
    /// The live plan's licenses follow the users: the owner cannot set them.
    #[error("Unable to update licenses manually. Your plan is on automatic license management.")]
    AutomaticLicenses,
    /// A trial's licenses are set at its end.
    #[error("Cannot update licenses in the current billing period for free trial plan.")]
    FreeTrial,
    /// Licenses paid for this period stay paid for.
    #[error("You cannot decrease the licenses in the current billing period.")]
    CannotDecrease,
    /// The count asked for is the current one.
    #[error("Your plan is already on {0} licenses in the current billing period.")]
    AlreadyOn(u32),
    /// The next-renewal count asked for is the scheduled one.
    #[error("Your plan is already scheduled to renew with {0} licenses.")]
    AlreadyScheduled(u32),
    /// The plan ends at the end of its period: nothing renews.
    #[error("Cannot change the licenses for next billing cycle for a plan that is being downgraded.")]
    Downgrading,
    /// The plan is already set to end at the end of its period.
    #[error("Your plan is already scheduled to end at the end of the billing period.")]
    AlreadyEnding,
    /// Only paid plans that renew can be cancelled.
    #[error("This plan cannot be cancelled here.")]
    NotCancellable,
    /// There is no scheduled change to undo.
    #[error("There is no scheduled change to undo.")]
    NothingToUndo,
    /// The entity's server, or one of the server's organizations, has a plan.
    #[error(
        "Your server, or an organization on it, already has a plan: a server and its organizations cannot both have one."
    )]
    PlanElsewhere,
    /// A sponsorship request awaits review already.
    #[error("Your sponsorship request is already being reviewed.")]
    SponsorshipPending,
    /// No sponsorship request awaits review.
    #[error("No sponsorship request is pending.")]
    NoSponsorshipRequest,
    /// The entity is sponsored already.
    #[error("It is on the Community plan already.")]
    AlreadyCommunity,
    /// A discount is a whole percentage from 0 to 99.
    #[error("The discount must be a whole percentage from 0 to 99, not {0}.")]
    InvalidDiscount(u8),
    /// A legacy plan's end date must be after now.
    #[error("The end date must be in the future.")]
    EndDateNotInFuture,
    /// An upgrade is already scheduled for the end of the legacy plan.
    #[error("An upgrade is already scheduled for the end of your current plan.")]
    AlreadyScheduledUpgrade,
    /// An upgrade could no longer be made when its card arrived.
    #[error("{0}")]
    Refused(String),
    /// The server has not uploaded its users recently enough to count them.
    #[error("missing data: the server has not uploaded its usage since {since:?}")]
    MissingData {
        /// The last upload, if any.
        since: Option<DateTime<Utc>>,
    },
}

/// `anchor` plus `periods` periods of `schedule`, clamped to the month's end as calendars do.
pub fn period_boundary(anchor: DateTime<Utc>, schedule: Schedule, periods: u32) -> DateTime<Utc> {
    anchor
        .checked_add_months(Months::new(schedule.months() * periods))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The start of the period after the one `t` falls in.
pub fn next_period_start(anchor: DateTime<Utc>, schedule: Schedule, t: DateTime<Utc>) -> DateTime<Utc> {
    (1..)
        .map(|k| period_boundary(anchor, schedule, k))
        .find(|boundary| *boundary > t)
        .expect("boundaries grow without end")
}

/// The start of the period `t` falls in (`anchor` itself before it).
pub fn period_start(anchor: DateTime<Utc>, schedule: Schedule, t: DateTime<Utc>) -> DateTime<Utc> {
    (0..)
        .map(|k| period_boundary(anchor, schedule, k))
        .take_while(|boundary| *boundary <= t)
        .last()
        .unwrap_or(anchor)
}

/// What an owner asks for on the upgrade page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The tier.
    pub tier: Tier,
    /// The schedule.
    pub schedule: Schedule,
    /// Who sets the count.
    pub license_management: LicenseManagement,
    /// The count, for manual management.
    pub licenses: Option<u32>,
}

/// What the upgrade needs to know besides the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpgradeContext {
    /// The users the entity's server last reported.
    pub billed_count: u32,
    /// `SELF_HOSTED_FREE_TRIAL_DAYS` (0: no trial).
    pub trial_days: u32,
    /// The list prices.
    pub prices: Prices,
    /// Now.
    pub now: DateTime<Utc>,
    /// The new plan's id: the pending upgrade's, so that completing one upgrade twice writes
    /// one plan (the second write finds it and fails its condition).
    pub plan_id: Uuid,
}

/// The license count an upgrade buys: for manual management the count asked for, at least
/// `max(billed count, minimum)`; for automatic management exactly that.
pub fn licenses_to_buy(request: &UpgradeRequest, billed_count: u32) -> Result<u32, PlanError> {
    let minimum = billed_count.max(request.tier.minimum_licenses());
    match request.license_management {
        LicenseManagement::Automatic => Ok(minimum),
        LicenseManagement::Manual => match request.licenses {
            None => Err(PlanError::LicensesRequired),
            Some(asked) if asked < minimum => Err(PlanError::TooFewLicenses { minimum }),
            Some(asked) => Ok(asked),
        },
    }
}

/// Whether the entity is offered a free trial on `tier`: `basic` only, when the setting is on
/// and the entity never had a plan (legacy included).
pub fn trial_offered(book: &Book, tier: Tier, trial_days: u32) -> bool {
    tier == Tier::Basic && trial_days > 0 && !book.ever_had_plan && book.plan.is_none()
}

/// Starts a paid plan now: a free trial when one is offered (nothing charged; first invoice at
/// its end), else `active` (the caller charges the first period before storing it). The plan's
/// first ledger row is a renewal with the bought count for both numbers.
///
/// An entity on a legacy plan schedules the upgrade instead ([`schedule_upgrade`]).
pub fn upgrade(book: &Book, request: &UpgradeRequest, context: &UpgradeContext) -> Result<(Book, Changes), PlanError> {
    if !request.tier.is_paid() {
        return Err(PlanError::NotForSale(request.tier.as_str()));
    }
    if book.plan.as_ref().is_some_and(|plan| plan.tier == Tier::Legacy) {
        return schedule_upgrade(book, request, context);
    }
    if book.plan.is_some() {
        return Err(PlanError::AlreadyHasPlan);
    }
    let licenses = licenses_to_buy(request, context.billed_count)?;
    let now = context.now;
    let trial = trial_offered(book, request.tier, context.trial_days);
    let discount = book.customer.default_discount;
    let first_invoice = if trial {
        now + chrono::Duration::days(i64::from(context.trial_days))
    } else {
        next_invoice_after(request.schedule, request.license_management, now, now)
    };
    let plan = Plan {
        id: context.plan_id,
        entity: book.customer.entity,
        tier: request.tier,
        schedule: request.schedule,
        license_management: request.license_management,
        price_per_license: discounted(context.prices.list_price(request.tier, request.schedule), discount),
        discount_percent: discount,
        billing_cycle_anchor: now,
        next_invoice_date: Some(first_invoice),
        end_date: None,
        status: if trial {
            PlanStatus::FreeTrial
        } else {
            PlanStatus::Active
        },
        invoiced_through: None,
        scheduled_licenses: None,
    };
    let mut next = book.clone();
    next.plan = Some(plan);
    next.ledger = Vec::new();
    next.ever_had_plan = true;
    let row = next.append(now, true, licenses, licenses);
    if let Some(plan) = next.plan.as_mut() {
        // The first row is never invoiced by the ledger: a paid start is charged when the plan
        // is bought, and a trial is free (its end appends the first billed renewal).
        plan.invoiced_through = Some(row.seq);
    }
    Ok((
        next,
        Changes {
            rows: vec![row],
            ended: Vec::new(),
        },
    ))
}

/// Puts the entity on a complimentary `legacy` plan until `end_date`: never invoiced, its
/// ledger tracking the users (one renewal row with the billed count now) so a plan scheduled
/// after it starts with the right count. Refused while a plan is live.
pub fn start_legacy(
    book: &Book,
    end_date: DateTime<Utc>,
    billed_count: u32,
    now: DateTime<Utc>,
    plan_id: Uuid,
) -> Result<(Book, Changes), PlanError> {
    let (mut next, mut changes) = end_of_cycle(book, now);
    if next.plan.is_some() {
        return Err(PlanError::AlreadyHasPlan);
    }
    if end_date <= now {
        return Err(PlanError::EndDateNotInFuture);
    }
    let legacy = Plan {
        id: plan_id,
        entity: next.customer.entity,
        tier: Tier::Legacy,
        schedule: Schedule::Annual,
        license_management: LicenseManagement::Automatic,
        price_per_license: 0,
        discount_percent: 0,
        billing_cycle_anchor: now,
        next_invoice_date: Some(end_date),
        end_date: Some(end_date),
        status: PlanStatus::Active,
        invoiced_through: None,
        scheduled_licenses: None,
    };
    start_free_plan(&mut next, &mut changes, legacy, billed_count, now);
    Ok((next, changes))
}

/// Makes `plan` (free: legacy, community) the live plan now, its ledger one renewal row of the
/// billed count, never invoiced.
fn start_free_plan(book: &mut Book, changes: &mut Changes, plan: Plan, billed_count: u32, now: DateTime<Utc>) {
    book.plan = Some(plan);
    book.ledger = Vec::new();
    book.ever_had_plan = true;
    let row = book.append(now, true, billed_count, billed_count);
    if let Some(plan) = book.plan.as_mut() {
        plan.invoiced_through = Some(row.seq);
    }
    changes.rows.push(row);
}

/// Schedules a paid plan to start when the live legacy plan ends: a `never_started` plan
/// anchored at the end date (no trial; its first invoice is at that date), the legacy plan set
/// to `switch_plan_tier_at_plan_end`, and a row on the legacy ledger whose next-renewal count is
/// the count the new plan starts with: `max(billed count, requested)` for a manual plan,
/// `max(billed count, minimum)` for an automatic one.
pub fn schedule_upgrade(
    book: &Book,
    request: &UpgradeRequest,
    context: &UpgradeContext,
) -> Result<(Book, Changes), PlanError> {
    let now = context.now;
    let (mut next, mut changes) = end_of_cycle(book, now);
    let legacy = match &next.plan {
        Some(plan) if plan.tier == Tier::Legacy && plan.status == PlanStatus::Active => plan.clone(),
        Some(plan) if plan.tier == Tier::Legacy => return Err(PlanError::AlreadyScheduledUpgrade),
        _ => return Err(PlanError::NoPlan),
    };
    let end = legacy.end_date.ok_or(PlanError::NoPlan)?;
    let licenses = licenses_to_buy(request, context.billed_count)?;
    let discount = next.customer.default_discount;
    next.next_plan = Some(Plan {
        id: context.plan_id,
        entity: next.customer.entity,
        tier: request.tier,
        schedule: request.schedule,
        license_management: request.license_management,
        price_per_license: discounted(context.prices.list_price(request.tier, request.schedule), discount),
        discount_percent: discount,
        billing_cycle_anchor: end,
        next_invoice_date: Some(end),
        end_date: None,
        status: PlanStatus::NeverStarted,
        invoiced_through: None,
        scheduled_licenses: match request.license_management {
            LicenseManagement::Manual => Some(licenses),
            LicenseManagement::Automatic => None,
        },
    });
    if let Some(plan) = next.plan.as_mut() {
        plan.status = PlanStatus::SwitchPlanTierAtPlanEnd;
    }
    let last = *next.last_row().ok_or(PlanError::NoPlan)?;
    let row = next.append(now, false, last.licenses, licenses);
    changes.rows.push(row);
    Ok((next, changes))
}

/// Approves a sponsorship request: the entity moves to the `community` tier. With no live plan
/// the community plan starts now; a live plan (paid, trial or legacy) ends at the end of its
/// period (legacy: its end date), when the community plan starts, and a plan scheduled after it
/// is dropped. Nothing more is invoiced after that end.
pub fn approve_sponsorship(
    book: &Book,
    billed_count: u32,
    now: DateTime<Utc>,
    plan_id: Uuid,
) -> Result<(Book, Changes), PlanError> {
    let (mut next, mut changes) = end_of_cycle(book, now);
    if next.plan.as_ref().is_some_and(|plan| plan.tier == Tier::Community) {
        return Err(PlanError::AlreadyCommunity);
    }
    next.customer.sponsorship_pending = false;
    let community = |anchor: DateTime<Utc>, status: PlanStatus| Plan {
        id: plan_id,
        entity: book.customer.entity,
        tier: Tier::Community,
        schedule: Schedule::Annual,
        license_management: LicenseManagement::Automatic,
        price_per_license: 0,
        discount_percent: 0,
        billing_cycle_anchor: anchor,
        next_invoice_date: None,
        end_date: None,
        status,
        invoiced_through: None,
        scheduled_licenses: None,
    };
    if let Some(mut dropped) = next.next_plan.take() {
        dropped.status = PlanStatus::Ended;
        dropped.next_invoice_date = None;
        changes.ended.push(dropped);
    }
    let Some(live) = next.plan.clone() else {
        start_free_plan(
            &mut next,
            &mut changes,
            community(now, PlanStatus::Active),
            billed_count,
            now,
        );
        return Ok((next, changes));
    };
    let last = *next.last_row().ok_or(PlanError::NoPlan)?;
    let end = match live.status {
        PlanStatus::FreeTrial | PlanStatus::DowngradeAtEndOfFreeTrial => live.next_invoice_date,
        _ if live.end_date.is_some() => live.end_date,
        _ => Some(next_period_start(
            live.billing_cycle_anchor,
            live.schedule,
            last_renewal_time(&live, &last),
        )),
    }
    .ok_or(PlanError::NoPlan)?;
    if let Some(plan) = next.plan.as_mut() {
        plan.status = PlanStatus::SwitchPlanTierAtPlanEnd;
        plan.end_date = Some(end);
    }
    next.next_plan = Some(community(end, PlanStatus::NeverStarted));
    Ok((next, changes))
}

/// The customer's default discount becomes `percent`: the live paid plan and a scheduled next
/// plan are repriced at once (`floor(list price × (100 − d) / 100)`), and every plan bought
/// later starts with it. Returns the book and the discount it replaced.
pub fn set_discount(book: &Book, percent: u8, prices: &Prices) -> Result<(Book, u8), PlanError> {
    if percent > 99 {
        return Err(PlanError::InvalidDiscount(percent));
    }
    let mut next = book.clone();
    let old = next.customer.default_discount;
    next.customer.default_discount = percent;
    for plan in next.plan.iter_mut().chain(next.next_plan.iter_mut()) {
        if plan.tier.is_paid() {
            plan.price_per_license = discounted(prices.list_price(plan.tier, plan.schedule), percent);
            plan.discount_percent = percent;
        }
    }
    Ok((next, old))
}

/// When a plan invoiced at `last` is invoiced next: monthly for automatic plans even on
/// annual schedules (added users are billed monthly), else once a period.
fn next_invoice_after(
    schedule: Schedule,
    management: LicenseManagement,
    anchor: DateTime<Utc>,
    last: DateTime<Utc>,
) -> DateTime<Utc> {
    let cadence = match management {
        LicenseManagement::Automatic => Schedule::Monthly,
        LicenseManagement::Manual => schedule,
    };
    next_period_start(anchor, cadence, last)
}

/// A manual change of the live plan's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManualChange {
    /// Licenses for this period (only up).
    pub licenses: Option<u32>,
    /// Licenses the next period starts with (up or down, not below the users or the minimum).
    pub licenses_at_next_renewal: Option<u32>,
}

/// Applies an owner's manual license change at `now` (after the end-of-cycle updates due by
/// then): an increase of this period's licenses is billed prorated at the next invoice; the
/// next-renewal count moves freely above `max(billed count, minimum)`. Automatic plans and
/// trials refuse.
pub fn update_licenses(
    book: &Book,
    change: ManualChange,
    billed_count: u32,
    now: DateTime<Utc>,
) -> Result<(Book, Changes), PlanError> {
    let (mut next, mut changes) = end_of_cycle(book, now);
    let plan = next.plan.clone().ok_or(PlanError::NoPlan)?;
    if plan.license_management == LicenseManagement::Automatic {
        return Err(PlanError::AutomaticLicenses);
    }
    if matches!(
        plan.status,
        PlanStatus::FreeTrial | PlanStatus::DowngradeAtEndOfFreeTrial
    ) && change.licenses.is_some()
    {
        return Err(PlanError::FreeTrial);
    }
    let last = *next.last_row().ok_or(PlanError::NoPlan)?;
    let mut licenses = last.licenses;
    let mut at_renewal = last.licenses_at_next_renewal;
    if let Some(asked) = change.licenses {
        if asked == last.licenses {
            return Err(PlanError::AlreadyOn(asked));
        }
        if asked < last.licenses {
            return Err(PlanError::CannotDecrease);
        }
        let minimum = billed_count.max(plan.tier.minimum_licenses());
        if asked < minimum {
            return Err(PlanError::TooFewLicenses { minimum });
        }
        licenses = asked;
        at_renewal = at_renewal.max(asked);
    }
    if let Some(asked) = change.licenses_at_next_renewal {
        if matches!(
            plan.status,
            PlanStatus::DowngradeAtEndOfCycle | PlanStatus::DowngradeAtEndOfFreeTrial
        ) {
            return Err(PlanError::Downgrading);
        }
        if asked == last.licenses_at_next_renewal && change.licenses.is_none() {
            return Err(PlanError::AlreadyScheduled(asked));
        }
        let minimum = billed_count.max(plan.tier.minimum_licenses());
        if asked < minimum {
            return Err(PlanError::TooFewLicenses { minimum });
        }
        at_renewal = asked;
    }
    if change.licenses.is_none() && change.licenses_at_next_renewal.is_none() {
        return Err(PlanError::LicensesRequired);
    }
    let row = next.append(now, false, licenses, at_renewal);
    changes.rows.push(row);
    Ok((next, changes))
}

/// The end-of-cycle updates due by `now`, as many boundaries as have passed, each once: a
/// renewal row (`licenses = licenses_at_next_renewal`) per period; a trial becomes `active`
/// (its end anchors the periods); a plan set to downgrade ends; a plan switching at its end
/// ends and its `never_started` successor starts with the predecessor's
/// `licenses_at_next_renewal`; a legacy plan reaching its end with nothing next ends. Running it
/// again for a boundary already passed appends nothing.
pub fn end_of_cycle(book: &Book, now: DateTime<Utc>) -> (Book, Changes) {
    let mut next = book.clone();
    let mut changes = Changes::default();
    // Each pass handles one boundary; a plan cannot have more boundaries than days.
    for _ in 0..100_000 {
        let Some(plan) = next.plan.clone() else {
            break;
        };
        let Some(last) = next.last_row().copied() else {
            break;
        };
        let Some(boundary) = boundary_of(&plan, &last) else {
            break;
        };
        if boundary > now {
            break;
        }
        match plan.status {
            PlanStatus::FreeTrial => {
                let mut active = plan;
                active.status = PlanStatus::Active;
                active.billing_cycle_anchor = boundary;
                // Nothing of the trial is owed: the rows it appended are settled by the
                // renewal below, which bills the count the trial ended with.
                active.invoiced_through = Some(last.seq);
                next.plan = Some(active);
                let row = next.append(
                    boundary,
                    true,
                    last.licenses_at_next_renewal,
                    last.licenses_at_next_renewal,
                );
                changes.rows.push(row);
            }
            PlanStatus::Active if plan.end_date.is_none() => {
                let row = next.append(
                    boundary,
                    true,
                    last.licenses_at_next_renewal,
                    last.licenses_at_next_renewal,
                );
                changes.rows.push(row);
            }
            PlanStatus::SwitchPlanTierAtPlanEnd if next.next_plan.is_some() => {
                changes.extend(end_plan(&mut next));
                let mut successor = next.next_plan.take().expect("checked");
                successor.status = PlanStatus::Active;
                successor.billing_cycle_anchor = boundary;
                // A free successor (community) is never invoiced.
                successor.next_invoice_date = successor.tier.is_paid().then_some(boundary);
                next.plan = Some(successor);
                next.ledger = Vec::new();
                let licenses = last.licenses_at_next_renewal;
                let row = next.append(boundary, true, licenses, licenses);
                changes.rows.push(row);
            }
            // Downgrades, legacy plans at their end with nothing next, and a switch whose
            // successor is gone all end the plan: the entity is back to `self_managed`.
            _ => {
                changes.extend(end_plan(&mut next));
                break;
            }
        }
    }
    (next, changes)
}

/// Sets the live paid plan to end at the end of its period (`downgrade_at_end_of_cycle`), or a
/// trial to end at its end (`downgrade_at_end_of_free_trial`); the entity is back to
/// `self_managed` then and nothing more is invoiced.
pub fn cancel_at_end_of_cycle(book: &Book, now: DateTime<Utc>) -> Result<(Book, Changes), PlanError> {
    let (mut next, changes) = end_of_cycle(book, now);
    let plan = next.plan.as_mut().ok_or(PlanError::NoPlan)?;
    plan.status = match plan.status {
        PlanStatus::Active if plan.tier.is_paid() && plan.end_date.is_none() => PlanStatus::DowngradeAtEndOfCycle,
        PlanStatus::FreeTrial => PlanStatus::DowngradeAtEndOfFreeTrial,
        PlanStatus::DowngradeAtEndOfCycle | PlanStatus::DowngradeAtEndOfFreeTrial => {
            return Err(PlanError::AlreadyEnding);
        }
        _ => return Err(PlanError::NotCancellable),
    };
    Ok((next, changes))
}

/// Undoes [`cancel_at_end_of_cycle`] before the period ends: the plan renews (or its trial
/// turns into a paid plan) again.
pub fn undo_cancel(book: &Book, now: DateTime<Utc>) -> Result<(Book, Changes), PlanError> {
    let (mut next, changes) = end_of_cycle(book, now);
    let plan = next.plan.as_mut().ok_or(PlanError::NoPlan)?;
    plan.status = match plan.status {
        PlanStatus::DowngradeAtEndOfCycle => PlanStatus::Active,
        PlanStatus::DowngradeAtEndOfFreeTrial => PlanStatus::FreeTrial,
        PlanStatus::SwitchPlanTierAtPlanEnd => PlanStatus::Active,
        _ => return Err(PlanError::NothingToUndo),
    };
    // Cancelling a scheduled upgrade ends the plan that never started; the legacy plan goes on.
    let mut changes = changes;
    if let Some(mut scheduled) = next.next_plan.take() {
        scheduled.status = PlanStatus::Ended;
        scheduled.next_invoice_date = None;
        changes.ended.push(scheduled);
    }
    Ok((next, changes))
}

/// When the live plan's current period ends, for `end_of_cycle`.
fn boundary_of(plan: &Plan, last: &LedgerRow) -> Option<DateTime<Utc>> {
    match plan.status {
        PlanStatus::FreeTrial | PlanStatus::DowngradeAtEndOfFreeTrial => plan.next_invoice_date,
        PlanStatus::SwitchPlanTierAtPlanEnd => plan.end_date,
        PlanStatus::Active | PlanStatus::DowngradeAtEndOfCycle if plan.end_date.is_some() => plan.end_date,
        PlanStatus::Active | PlanStatus::DowngradeAtEndOfCycle if plan.tier.is_paid() => Some(next_period_start(
            plan.billing_cycle_anchor,
            plan.schedule,
            last_renewal_time(plan, last),
        )),
        _ => None,
    }
}

/// The start of the period the last row belongs to.
fn last_renewal_time(plan: &Plan, last: &LedgerRow) -> DateTime<Utc> {
    period_start(plan.billing_cycle_anchor, plan.schedule, last.event_time)
}

fn end_plan(book: &mut Book) -> Changes {
    let mut changes = Changes::default();
    if let Some(mut plan) = book.plan.take() {
        plan.status = PlanStatus::Ended;
        plan.next_invoice_date = None;
        changes.ended.push(plan);
    }
    book.ledger.clear();
    changes
}

/// One count of an entity's users, from an uploaded audit-log row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountAt {
    /// When.
    pub event_time: DateTime<Utc>,
    /// The billed count then.
    pub count: u32,
}

/// Applies uploaded counts newer than the ledger's last row, in time order, to a live plan
/// whose licenses follow its users (an automatic plan, or a legacy plan, which tracks its users
/// for the plan after it), running the end-of-cycle updates due before each: the next-renewal
/// count follows the users (at least the tier's minimum; for a manual plan scheduled next, at
/// least the count its owner chose), and this period's licenses never go down. Manual plans
/// are never synced.
pub fn sync_ledger(book: &Book, counts: &[CountAt]) -> (Book, Changes) {
    let mut next = book.clone();
    let mut changes = Changes::default();
    let mut counts = counts.to_vec();
    counts.sort_by_key(|c| c.event_time);
    for count in counts {
        let Some(last) = next.last_row().copied() else {
            break;
        };
        if count.event_time <= last.event_time {
            continue;
        }
        let (after, ended) = end_of_cycle(&next, count.event_time);
        next = after;
        changes.extend(ended);
        let Some(plan) = next.plan.clone() else {
            break;
        };
        if plan.license_management == LicenseManagement::Manual {
            break;
        }
        let Some(last) = next.last_row().copied() else {
            break;
        };
        let at_renewal = match (&next.next_plan, plan.status) {
            // A manual count chosen for the scheduled plan is never lowered by uploads.
            (Some(successor), PlanStatus::SwitchPlanTierAtPlanEnd) => {
                let floor = count.count.max(successor.tier.minimum_licenses());
                match (successor.license_management, successor.scheduled_licenses) {
                    (LicenseManagement::Manual, Some(chosen)) => chosen.max(count.count),
                    _ => floor,
                }
            }
            _ => count.count.max(plan.tier.minimum_licenses()),
        };
        let licenses = at_renewal.max(last.licenses);
        let row = next.append(count.event_time, false, licenses, at_renewal);
        changes.rows.push(row);
    }
    (next, changes)
}

/// One item of an invoice made from the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceItem {
    /// The Stripe idempotency key: `ledger_entry:<row id>`.
    pub idempotency_key: String,
    /// What it is for.
    pub description: String,
    /// How many licenses.
    pub quantity: u32,
    /// Cents per license for the time billed.
    pub unit_amount: u64,
    /// The time it covers.
    pub period: (DateTime<Utc>, DateTime<Utc>),
}

/// What invoicing a plan came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvoiceRun {
    /// Not due yet.
    NotDue,
    /// Due, but the server has not uploaded since the due date: wait for it.
    Deferred,
    /// The items of the invoice to make (none when nothing is owed), and the book after it.
    Invoice {
        /// The items, in ledger order.
        items: Vec<InvoiceItem>,
        /// The book with the plan's `invoiced_through` and `next_invoice_date` moved on.
        book: Box<Book>,
        /// What the end-of-cycle updates changed on the way.
        changes: Changes,
    },
}

/// The items owed for `plan`'s ledger rows after its last invoiced one, up to `due`, and the
/// last row they cover: a renewal bills `licenses × price`; an increase bills the added
/// licenses × price × the part of its period left.
fn ledger_items(plan: &Plan, ledger: &[LedgerRow], due: DateTime<Utc>) -> (Vec<InvoiceItem>, Option<u32>) {
    let mut items = Vec::new();
    let invoiced_through = plan.invoiced_through;
    let mut base = ledger
        .iter()
        .rev()
        .find(|row| invoiced_through.is_some_and(|seq| row.seq <= seq))
        .map_or(0, |row| row.licenses);
    let mut last = None;
    let due_rows = ledger
        .iter()
        .filter(|row| invoiced_through.is_none_or(|seq| row.seq > seq) && row.event_time <= due);
    for row in due_rows {
        let period_start = period_start(plan.billing_cycle_anchor, plan.schedule, row.event_time);
        let period_end = next_period_start(plan.billing_cycle_anchor, plan.schedule, row.event_time);
        if row.is_renewal {
            if plan.price_per_license > 0 && row.licenses > 0 {
                items.push(InvoiceItem {
                    idempotency_key: format!("ledger_entry:{}", row.id()),
                    description: format!("{} - renewal", plan.tier.display_name()),
                    quantity: row.licenses,
                    unit_amount: plan.price_per_license,
                    period: (row.event_time, period_end),
                });
            }
        } else if row.licenses > base && plan.price_per_license > 0 {
            let left = (period_end - row.event_time).num_seconds().max(0) as f64;
            let whole = (period_end - period_start).num_seconds().max(1) as f64;
            items.push(InvoiceItem {
                idempotency_key: format!("ledger_entry:{}", row.id()),
                description: format!("Additional {} license", plan.tier.display_name()),
                quantity: row.licenses - base,
                unit_amount: (plan.price_per_license as f64 * left / whole + 0.5).floor() as u64,
                period: (row.event_time, period_end),
            });
        }
        base = row.licenses;
        last = Some(row.seq);
    }
    (items, last)
}

/// Invoices the live plan at `at` if it is due: runs its end of cycle, then turns the ledger
/// rows after the last invoiced one (up to `at`) into items — a renewal row bills `licenses ×
/// price`, an increase bills the added licenses × price × the part of its period left — and
/// moves the next invoice date on. An invoice due at `D` waits until the server has uploaded at
/// or after `D` (`last_upload`).
pub fn invoice_plan(book: &Book, at: DateTime<Utc>, last_upload: Option<DateTime<Utc>>) -> InvoiceRun {
    let Some(due) = book.plan.as_ref().and_then(|p| p.next_invoice_date) else {
        return InvoiceRun::NotDue;
    };
    if due > at {
        return InvoiceRun::NotDue;
    }
    if last_upload.is_none_or(|upload| upload < due) {
        return InvoiceRun::Deferred;
    }
    let (mut next, changes) = end_of_cycle(book, due);
    let mut items = Vec::new();
    // A plan that ended at this boundary (cancelled, or switching to its successor) is still
    // owed the licenses added in its last period and not invoiced yet.
    // A trial that ended unpaid (cancelled during it) owes nothing.
    if let Some(ended) = book.plan.as_ref().filter(|current| {
        changes.ended.iter().any(|p| p.id == current.id)
            && !matches!(
                current.status,
                PlanStatus::FreeTrial | PlanStatus::DowngradeAtEndOfFreeTrial
            )
    }) {
        items.extend(ledger_items(ended, &book.ledger, due).0);
    }
    let Some(mut plan) = next.plan.clone() else {
        return InvoiceRun::Invoice {
            items,
            book: Box::new(next),
            changes,
        };
    };
    let (owed, last) = ledger_items(&plan, &next.ledger, due);
    items.extend(owed);
    if last.is_some() {
        plan.invoiced_through = last;
    }
    // A free plan that followed (community) is never invoiced again.
    plan.next_invoice_date = plan
        .tier
        .is_paid()
        .then(|| next_invoice_after(plan.schedule, plan.license_management, plan.billing_cycle_anchor, due));
    next.plan = Some(plan);
    InvoiceRun::Invoice {
        items,
        book: Box::new(next),
        changes,
    }
}

pub mod charge;
pub mod invoicing;
pub mod purchase;
pub mod stored;

#[cfg(test)]
mod tests;
