//! The browser side of remote billing (API.md "Remote billing", steps 1 to 5, server
//! deactivation, and the plan pages of "Remote billing plans"): server-rendered pages and form
//! posts, one function behind all their routes.

use billing::access::Operation;
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment};
use billing::ids::parse_canonical_uuid;
use billing::plans::purchase::{
    CheckoutLinks, PurchaseError, Purchases, SPONSORSHIP_ORG_TYPES, SponsorshipRequest, UpgradeStart,
    request_sponsorship,
};
use billing::plans::{Entity, LicenseManagement, ManualChange, PlanError, Schedule, Tier, UpgradeRequest};
use billing::remote::{LoginForm, NextPage, RemoteBilling, RemoteError};
use billing_http::html as pages;
use billing_http::pages::{PageRequest, PageResponse, serve_page_posting_to};
use billing_http::plan_html::{self, PlanPage, SponsorshipForm, UpgradeForm};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use std::collections::HashMap;

pub const LOGIN_ROUTE: &str = "GET /remote-billing-login/{token}";
pub const COMPLETE_LOGIN_ROUTE: &str = "POST /remote-billing-login/{token}";
pub const REQUEST_CONFIRMATION_ROUTE: &str = "POST /remote-billing-login/{token}/confirm";
pub const CONFIRM_EMAIL_ROUTE: &str = "GET /remote-billing-login/do_confirm/{key}";
pub const REALM_PAGE_ROUTE: &str = "GET /realm/{realm_uuid}/{page}";
pub const REALM_FORM_ROUTE: &str = "POST /realm/{realm_uuid}/{page}";
pub const SERVER_PAGE_ROUTE: &str = "GET /server/{server_uuid}/{page}";
pub const SERVER_FORM_ROUTE: &str = "POST /server/{server_uuid}/{page}";

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "remote-billing-pages";

/// What this function does with the store and the mail service; its IAM policy grants exactly
/// these.
pub const OPERATIONS: &[Operation] = &[
    Operation::GetDocument,
    Operation::PutDocument,
    Operation::PutDocuments,
    Operation::ListDocuments,
    Operation::SendMail,
    Operation::ReadSecrets,
];

pub struct RemoteBillingPages {
    pub remote: RemoteBilling,
    /// Buying and changing plans: on the same (declared) store as `remote`.
    pub purchases: Purchases,
    /// The origin of Stripe's Checkout pages (`https://checkout.stripe.com`), where the upgrade
    /// form's answer may send the browser.
    pub checkout_origin: String,
    pub clock: SharedClock,
}

/// The plan pages an entity has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlanPageKind {
    Plans,
    Upgrade,
    Billing,
    Sponsorship,
}

impl PlanPageKind {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "plans" => Some(PlanPageKind::Plans),
            "upgrade" => Some(PlanPageKind::Upgrade),
            "billing" => Some(PlanPageKind::Billing),
            "sponsorship" => Some(PlanPageKind::Sponsorship),
            _ => None,
        }
    }
}

/// Where Checkout pages live: Stripe's, or those of the API base Stripe is reached at (a local
/// sandbox serves its own).
pub fn checkout_origin(api_base: Option<&str>) -> String {
    let origin = api_base.and_then(|base| {
        let (scheme, rest) = base.split_once("://")?;
        let host = rest.split('/').next()?;
        let plain = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        (matches!(scheme, "http" | "https") && !host.is_empty() && plain).then(|| format!("{scheme}://{host}"))
    });
    origin.unwrap_or_else(|| "https://checkout.stripe.com".to_owned())
}

/// A checkbox counts as ticked when the browser sends it at all (`on`, or our `true`).
fn ticked(value: Option<&String>) -> bool {
    value.is_some_and(|v| matches!(v.as_str(), "true" | "on" | "1"))
}

fn not_found() -> PageResponse {
    PageResponse::Html {
        status: StatusCode::NOT_FOUND,
        body: pages::error("Not found", "There is no such page.", None),
    }
}

/// Remote billing on DynamoDB (`BILLING_TABLE`) and SES (`MAIL_FROM`), the AWS clients built
/// from one configuration.
async fn remote_billing_on_aws(env: &dyn Environment) -> Result<RemoteBilling, ConfigError> {
    let aws = billing_adapters::aws::load_sdk_config().await;
    let store = billing_adapters::DynamoStore::with_config(&aws, billing::config::billing_table(env)?);
    let mailer = billing_adapters::SesMailer::from_env_with_config(env, &aws)?;
    RemoteBilling::from_env(env, std::sync::Arc::new(store), std::sync::Arc::new(mailer))
}

impl RemoteBillingPages {
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let remote = remote_billing_on_aws(env).await?;
        let purchases = Purchases {
            documents: remote.records.documents().clone(),
            stripe: std::sync::Arc::new(billing_adapters::StripeBilling::from_env(env)?),
            trial_days: billing::config::self_hosted_free_trial_days(env)?,
            prices: billing::plans::Prices::default(),
        };
        Ok(RemoteBillingPages {
            remote,
            purchases,
            checkout_origin: checkout_origin(billing::config::optional(env, "STRIPE_API_BASE").as_deref()),
            clock: std::sync::Arc::new(billing_adapters::SystemClock),
        }
        .declared())
    }

    /// The same function, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        let remote = self.remote.restricted_to(FUNCTION, OPERATIONS);
        let purchases = Purchases {
            documents: remote.records.documents().clone(),
            ..self.purchases
        };
        RemoteBillingPages {
            remote,
            purchases,
            ..self
        }
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        let origin = billing_http::origin_of(&request);
        let work = serve_page_posting_to(request, Some(&self.checkout_origin), |request| self.route(request));
        billing::remote::service::serving_origin(origin, work).await
    }

    async fn route(&self, request: PageRequest) -> Result<PageResponse, RemoteError> {
        let now = self.clock.now();
        let remote = &self.remote;
        let param = |name: &str| request.path_parameter(name).unwrap_or_default();
        match request.route_key() {
            Some(LOGIN_ROUTE) => {
                let token = param("token");
                let view = remote.login_page(&token, now).await?;
                Ok(PageResponse::ok(pages::login(&token, &view)))
            }
            Some(REQUEST_CONFIRMATION_ROUTE) => {
                let form = request.form();
                let email = form.get("email").map_or("", String::as_str);
                let sent_to = remote
                    .request_confirmation(
                        &param("token"),
                        email,
                        form.get("csrf_token").map(String::as_str),
                        request.client_ip(),
                        now,
                    )
                    .await?;
                Ok(PageResponse::ok(pages::check_email(&sent_to)))
            }
            Some(CONFIRM_EMAIL_ROUTE) => {
                let fresh = remote.confirm_email(&param("key"), now).await?;
                Ok(PageResponse::Redirect {
                    location: format!("/remote-billing-login/{fresh}"),
                    session: None,
                })
            }
            Some(COMPLETE_LOGIN_ROUTE) => {
                let form = request.form();
                let login = LoginForm {
                    full_name: form.get("full_name").cloned(),
                    tos_consent: ticked(form.get("tos_consent")),
                    csrf: form.get("csrf_token").cloned(),
                };
                let logged_in = remote.complete_login(&param("token"), login, now).await?;
                Ok(PageResponse::Redirect {
                    location: logged_in.location,
                    session: Some(logged_in.session_secret),
                })
            }
            Some(REALM_PAGE_ROUTE) => {
                let Some(realm) = parse_canonical_uuid(&param("realm_uuid")) else {
                    return Ok(not_found());
                };
                if let Some(kind) = PlanPageKind::parse(&param("page")) {
                    return self.plan_page(&request, Entity::Realm(realm), kind, now).await;
                }
                let Some(page) = NextPage::parse(&param("page")) else {
                    return Ok(not_found());
                };
                let view = remote
                    .realm_page(request.session_cookie().as_deref(), realm, page, now)
                    .await?;
                Ok(PageResponse::ok(pages::realm(&view)))
            }
            Some(REALM_FORM_ROUTE) => {
                let (Some(realm), Some(kind)) = (
                    parse_canonical_uuid(&param("realm_uuid")),
                    PlanPageKind::parse(&param("page")),
                ) else {
                    return Ok(not_found());
                };
                self.plan_form(&request, Entity::Realm(realm), kind, now).await
            }
            Some(SERVER_PAGE_ROUTE) => {
                let Some(server) = parse_canonical_uuid(&param("server_uuid")) else {
                    return Ok(not_found());
                };
                if let Some(kind) = PlanPageKind::parse(&param("page")) {
                    return self.plan_page(&request, Entity::Server(server), kind, now).await;
                }
                if param("page") != "deactivate" {
                    return Ok(not_found());
                }
                let view = remote
                    .server_page(request.session_cookie().as_deref(), server, now)
                    .await?;
                Ok(PageResponse::ok(pages::server(&view)))
            }
            Some(SERVER_FORM_ROUTE) => {
                let Some(server) = parse_canonical_uuid(&param("server_uuid")) else {
                    return Ok(not_found());
                };
                if let Some(kind) = PlanPageKind::parse(&param("page")) {
                    return self.plan_form(&request, Entity::Server(server), kind, now).await;
                }
                if param("page") != "deactivate" {
                    return Ok(not_found());
                }
                let form = request.form();
                let deactivated = remote
                    .deactivate_server(
                        request.session_cookie().as_deref(),
                        server,
                        ticked(form.get("confirmed")),
                        form.get("csrf_token").map(String::as_str),
                        now,
                    )
                    .await?;
                Ok(PageResponse::ok(pages::deactivated(&deactivated.hostname)))
            }
            _ => Ok(not_found()),
        }
    }
}

/// What a plan page shows, read once per request.
struct PlanState {
    session: billing::remote::entity::EntitySession,
    book: billing::plans::Book,
    usage: billing::plans::purchase::Usage,
    upgrade: Option<billing::plans::purchase::PendingUpgrade>,
}

impl RemoteBillingPages {
    async fn plan_state(
        &self,
        session: billing::remote::entity::EntitySession,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<PlanState, RemoteError> {
        let entity = session.entity;
        let (book, upgrade) = self.purchases.current(entity, now).await?;
        let usage = self.purchases.usage(entity, now).await?;
        Ok(PlanState {
            session,
            book,
            usage,
            upgrade,
        })
    }

    /// The page of `kind`, its form filled in with what was `sent` (after an error).
    fn render(
        &self,
        state: &PlanState,
        kind: PlanPageKind,
        now: chrono::DateTime<chrono::Utc>,
        sent: &HashMap<String, String>,
        error: Option<&str>,
        notice: Option<&str>,
    ) -> String {
        let page = PlanPage {
            session: &state.session,
            book: &state.book,
            usage: state.usage,
            upgrade: state.upgrade.as_ref(),
            prices: self.purchases.prices,
            trial_days: self.purchases.trial_days,
            now,
        };
        match kind {
            PlanPageKind::Plans => plan_html::plans(&page),
            PlanPageKind::Upgrade => plan_html::upgrade(&page, &upgrade_form_of(sent), error),
            PlanPageKind::Billing => plan_html::billing(&page, error, notice),
            PlanPageKind::Sponsorship => plan_html::sponsorship(&page, &sponsorship_form_of(sent), error, notice),
        }
    }

    /// `GET .../{plans,upgrade,billing}/`.
    async fn plan_page(
        &self,
        request: &PageRequest,
        entity: Entity,
        kind: PlanPageKind,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<PageResponse, RemoteError> {
        let session = self
            .remote
            .entity_session(request.session_cookie().as_deref(), entity, now)
            .await?;
        let state = self.plan_state(session, now).await?;
        Ok(PageResponse::ok(self.render(
            &state,
            kind,
            now,
            &HashMap::new(),
            None,
            None,
        )))
    }

    /// `POST .../upgrade/` and `POST .../billing/`.
    async fn plan_form(
        &self,
        request: &PageRequest,
        entity: Entity,
        kind: PlanPageKind,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<PageResponse, RemoteError> {
        let form = request.form();
        let session = self
            .remote
            .entity_form(
                request.session_cookie().as_deref(),
                entity,
                form.get("csrf_token").map(String::as_str),
                now,
            )
            .await?;
        let base = format!("{}{}", self.remote.settings.base_url(), session.base_path);
        let outcome = match kind {
            PlanPageKind::Upgrade => self.upgrade(&session, &form, &base, now).await,
            PlanPageKind::Billing => self.change_plan(entity, &form, now).await,
            PlanPageKind::Sponsorship => self.request_sponsorship(&session, &form, now).await,
            PlanPageKind::Plans => return Ok(not_found()),
        };
        match outcome {
            Ok(FormOutcome::Redirect(location)) => Ok(PageResponse::Redirect {
                location,
                session: None,
            }),
            Ok(FormOutcome::Notice(notice)) => {
                let state = self.plan_state(session, now).await?;
                Ok(PageResponse::ok(self.render(
                    &state,
                    kind,
                    now,
                    &HashMap::new(),
                    None,
                    Some(&notice),
                )))
            }
            Err(Refusal::Page(error)) => Err(error),
            Err(Refusal::Inline(status, message)) => {
                let state = self.plan_state(session, now).await?;
                tracing::info!(status = status.as_u16(), %message, "plan form refused");
                Ok(PageResponse::Html {
                    status,
                    body: self.render(&state, kind, now, &form, Some(&message), None),
                })
            }
        }
    }

    async fn upgrade(
        &self,
        session: &billing::remote::entity::EntitySession,
        form: &HashMap<String, String>,
        base: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<FormOutcome, Refusal> {
        let request = read_upgrade(form)?;
        let links = CheckoutLinks {
            success_url: format!("{base}/billing/"),
            cancel_url: format!("{base}/upgrade/"),
        };
        match self
            .purchases
            .begin_upgrade(session.entity, request, &session.user.email, &links, now)
            .await
        {
            Ok(UpgradeStart::Checkout { url }) => Ok(FormOutcome::Redirect(url)),
            Ok(UpgradeStart::Started(_)) => Ok(FormOutcome::Redirect(format!("{}/billing/", session.base_path))),
            Err(error) => Err(Refusal::from(error)),
        }
    }

    async fn request_sponsorship(
        &self,
        session: &billing::remote::entity::EntitySession,
        form: &HashMap<String, String>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<FormOutcome, Refusal> {
        let request = read_sponsorship(form, &session.user.email, now)?;
        request_sponsorship(self.purchases.documents.as_ref(), session.entity, &request, now)
            .await
            .map_err(Refusal::from)?;
        Ok(FormOutcome::Notice(
            "Your sponsorship request was sent; we will email you the decision.".to_owned(),
        ))
    }

    async fn change_plan(
        &self,
        entity: Entity,
        form: &HashMap<String, String>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<FormOutcome, Refusal> {
        let count = |name: &str| -> Result<u32, Refusal> {
            form.get(name)
                .and_then(|text| text.trim().parse::<u32>().ok())
                .filter(|count| *count > 0)
                .ok_or_else(|| Refusal::bad_request("Enter a whole number of licenses, at least 1."))
        };
        let purchases = &self.purchases;
        let (result, notice) = match form.get("action").map(String::as_str) {
            Some("licenses") => {
                let change = ManualChange {
                    licenses: Some(count("licenses")?),
                    licenses_at_next_renewal: None,
                };
                (
                    purchases.change_licenses(entity, change, now).await,
                    "Licenses updated; the increase is billed on your next invoice.",
                )
            }
            Some("licenses_at_next_renewal") => {
                let change = ManualChange {
                    licenses: None,
                    licenses_at_next_renewal: Some(count("licenses_at_next_renewal")?),
                };
                (
                    purchases.change_licenses(entity, change, now).await,
                    "Licenses at next renewal updated.",
                )
            }
            Some("cancel") => (
                purchases.cancel(entity, now).await,
                "Your plan will end at the end of this period.",
            ),
            Some("undo") => (
                purchases.undo_cancel(entity, now).await,
                "Your plan will renew as before.",
            ),
            _ => return Err(Refusal::bad_request("Unknown action.")),
        };
        result.map_err(Refusal::from)?;
        Ok(FormOutcome::Notice(notice.to_owned()))
    }
}

/// What a form post comes to.
enum FormOutcome {
    /// 302 there (Checkout, or the billing page).
    Redirect(String),
    /// The page again, saying this.
    Notice(String),
}

/// Why a form post changed nothing.
enum Refusal {
    /// The form again with this message inline.
    Inline(StatusCode, String),
    /// An error page.
    Page(RemoteError),
}

impl Refusal {
    fn bad_request(message: &str) -> Self {
        Refusal::Inline(StatusCode::BAD_REQUEST, message.to_owned())
    }
}

impl From<PurchaseError> for Refusal {
    fn from(error: PurchaseError) -> Self {
        match error {
            PurchaseError::Plan(PlanError::AlreadyHasPlan) => Refusal::Inline(
                StatusCode::CONFLICT,
                "This organization already has a plan; change it on the billing page.".to_owned(),
            ),
            PurchaseError::Plan(
                rule @ (PlanError::PlanElsewhere
                | PlanError::AlreadyScheduledUpgrade
                | PlanError::SponsorshipPending
                | PlanError::AlreadyCommunity),
            ) => {
                Refusal::Inline(StatusCode::CONFLICT, rule.to_string())
            }
            PurchaseError::Plan(rule) => Refusal::Inline(StatusCode::BAD_REQUEST, rule.to_string()),
            PurchaseError::Declined(message) => Refusal::Inline(
                StatusCode::PAYMENT_REQUIRED,
                format!("{message} Nothing was charged and no plan was started."),
            ),
            PurchaseError::MissingData => Refusal::Inline(
                StatusCode::BAD_REQUEST,
                "Missing data: your server has not sent its usage data in the last two days, so its users cannot be counted. Check that it can reach the billing service, then try again.".to_owned(),
            ),
            error @ PurchaseError::PurchaseInProgress => Refusal::Inline(StatusCode::CONFLICT, error.to_string()),
            PurchaseError::UnknownUpgrade => Refusal::Page(RemoteError::UnknownRealm),
            PurchaseError::Store(error) => Refusal::Page(RemoteError::Store(error)),
            PurchaseError::Stripe(error) => Refusal::Page(RemoteError::Stripe(error)),
        }
    }
}

fn field_of(sent: &HashMap<String, String>, name: &str) -> String {
    sent.get(name).cloned().unwrap_or_default()
}

/// The upgrade form as sent.
fn upgrade_form_of(sent: &HashMap<String, String>) -> UpgradeForm {
    UpgradeForm {
        tier: field_of(sent, "tier"),
        schedule: field_of(sent, "schedule"),
        license_management: field_of(sent, "license_management"),
        licenses: field_of(sent, "licenses"),
    }
}

/// The sponsorship form as sent.
fn sponsorship_form_of(sent: &HashMap<String, String>) -> SponsorshipForm {
    SponsorshipForm {
        org_type: field_of(sent, "org_type"),
        website: field_of(sent, "website"),
        description: field_of(sent, "description"),
        expected_total_users: field_of(sent, "expected_total_users"),
        paid_users_count: field_of(sent, "paid_users_count"),
        plan_to_use: field_of(sent, "plan_to_use"),
    }
}

/// The sponsorship form's fields, or the first thing wrong with them.
fn read_sponsorship(
    sent: &HashMap<String, String>,
    email: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<SponsorshipRequest, Refusal> {
    let field = |name: &str| sent.get(name).map(|v| v.trim().to_owned()).unwrap_or_default();
    let org_type = field("org_type");
    if !SPONSORSHIP_ORG_TYPES.contains(&org_type.as_str()) {
        return Err(Refusal::bad_request("Choose the type of your organization."));
    }
    let website = Some(field("website")).filter(|w| !w.is_empty());
    if let Some(website) = &website
        && (website.len() > 200 || !(website.starts_with("https://") || website.starts_with("http://")))
    {
        return Err(Refusal::bad_request(
            "The website must be an http(s) address of at most 200 characters.",
        ));
    }
    let description = field("description");
    if description.is_empty() || description.chars().count() > 2000 {
        return Err(Refusal::bad_request(
            "Describe your organization in at most 2,000 characters.",
        ));
    }
    let count = |name: &str, message: &str| field(name).parse::<u32>().map_err(|_| Refusal::bad_request(message));
    let expected_total_users = count("expected_total_users", "Enter the number of users you expect.")?;
    let paid_users_count = count(
        "paid_users_count",
        "Enter the number of users you pay for today (0 if none).",
    )?;
    let plan_to_use = field("plan_to_use");
    if !["community", "basic", "business"].contains(&plan_to_use.as_str()) {
        return Err(Refusal::bad_request("Choose the plan you would use."));
    }
    Ok(SponsorshipRequest {
        org_type,
        website,
        description,
        expected_total_users,
        paid_users_count,
        plan_to_use,
        requested_by: email.to_owned(),
        requested_at: now,
    })
}

/// The upgrade form's fields, or the first thing wrong with them.
fn read_upgrade(form: &HashMap<String, String>) -> Result<UpgradeRequest, Refusal> {
    let field = |name: &str| form.get(name).map(|v| v.trim()).unwrap_or_default();
    let tier = match Tier::parse(field("tier")) {
        Some(tier @ (Tier::Basic | Tier::Business)) => tier,
        _ => return Err(Refusal::bad_request("Choose Basic or Business.")),
    };
    let schedule = match field("schedule") {
        "monthly" => Schedule::Monthly,
        "annual" => Schedule::Annual,
        _ => return Err(Refusal::bad_request("Choose monthly or annual billing.")),
    };
    let license_management = match field("license_management") {
        "automatic" => LicenseManagement::Automatic,
        "manual" => LicenseManagement::Manual,
        _ => return Err(Refusal::bad_request("Choose automatic or manual licenses.")),
    };
    let licenses = match (license_management, field("licenses")) {
        (LicenseManagement::Automatic, _) => None,
        (LicenseManagement::Manual, text) => match text.parse::<u32>() {
            Ok(count) if count > 0 => Some(count),
            _ => return Err(Refusal::bad_request("Enter the number of licenses to buy.")),
        },
    };
    Ok(UpgradeRequest {
        tier,
        schedule,
        license_management,
        licenses,
    })
}
