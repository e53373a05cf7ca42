//! The HTML of the remote-billing browser steps: plain server-rendered forms that work without
//! JavaScript. Everything interpolated is escaped by maud.

use maud::{DOCTYPE, Markup, html};

use billing::remote::NextPage;
use billing::remote::RealmPlan;
use billing::remote::{LoginView, RealmView, ServerView, TERMS_OF_SERVICE_MAJOR};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}\
label{display:block;margin:1rem 0 .25rem}input[type=text],input[type=email]{width:100%;padding:.5rem;font-size:1rem}\
button{margin-top:1.25rem;padding:.6rem 1.2rem;font-size:1rem}.error{color:#a00}table{border-collapse:collapse}\
td,th{padding:.3rem 1rem .3rem 0;text-align:left}.muted{color:#555}\
.nav{list-style:none;display:flex;gap:1.5rem;padding:0}[aria-current=page]{font-weight:bold}\
fieldset{margin:1rem 0;border:1px solid #ccc}.choice{display:flex;gap:.5rem;align-items:baseline}.choice label{margin:.25rem 0}\
input[type=number]{width:8rem;padding:.4rem;font-size:1rem}[role=status]{color:#064}";

pub(crate) fn layout(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Billing" }
                style { (STYLE) }
            }
            body {
                main { (body) }
            }
        }
    }
    .into_string()
}

pub(crate) fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(csrf); }
}

/// Step 1 (first login) or step 4 (confirm login) for `token`.
pub fn login(token: &str, view: &LoginView) -> String {
    match view {
        LoginView::EmailForm { claims, csrf } => layout(
            "Log in to billing",
            html! {
                h1 { "Log in to billing for " (claims.realm_host) }
                p { "We will send a confirmation link to this address. It may differ from the one on your server." }
                form method="post" action={ "/remote-billing-login/" (token) "/confirm" } {
                    (csrf_field(csrf))
                    label for="email" { "Email" }
                    input type="email" id="email" name="email" required value=(claims.user_email);
                    button type="submit" id="send-confirmation" { "Send confirmation email" }
                }
            },
        ),
        LoginView::ConfirmLogin {
            claims,
            user,
            tos_required,
            csrf,
        } => layout(
            "Confirm login",
            html! {
                h1 { "Log in to billing for " (claims.realm_host) }
                form method="post" action={ "/remote-billing-login/" (token) } {
                    (csrf_field(csrf))
                    p { "Email: " strong { (user.email) } }
                    label for="full_name" { "Full name" }
                    input type="text" id="full_name" name="full_name" required maxlength="100" value=(user.full_name);
                    @if *tos_required {
                        label {
                            input type="checkbox" id="tos_consent" name="tos_consent" value="true" required;
                            " I agree to the Terms of Service (version " (TERMS_OF_SERVICE_MAJOR) ")."
                        }
                    }
                    button type="submit" id="continue" { "Continue" }
                }
            },
        ),
    }
}

/// Step 2's answer.
pub fn check_email(email: &str) -> String {
    layout(
        "Check your email",
        html! {
            h1 { "Check your email" }
            p { "We sent a confirmation link to " strong { (email) } ". It works once, within 24 hours." }
        },
    )
}

fn page_title(page: NextPage) -> &'static str {
    match page {
        NextPage::Billing => "Billing",
        NextPage::Plans => "Plans",
        NextPage::Upgrade => "Upgrade",
        NextPage::Sponsorship => "Sponsorship",
        NextPage::Deactivate => "Deactivate",
    }
}

/// A realm's pages behind the session.
pub fn realm(view: &RealmView) -> String {
    let realm = &view.realm;
    let licenses = realm
        .licenses
        .map_or_else(|| "none".to_owned(), |count| count.to_string());
    layout(
        page_title(view.page),
        html! {
            h1 { (page_title(view.page)) " for " (realm.name) }
            p { "Logged in as " (view.user.full_name) " (" (view.user.email) ")." }
            table id="realm-billing" {
                tr { th { "Organization" } td { (realm.name) } }
                tr { th { "Host" } td { (realm.host) } }
                tr { th { "Plan" } td id="plan" { (realm.plan.name()) } }
                tr { th { "Licenses" } td id="licenses" { (licenses) } }
            }
            @match view.page {
                NextPage::Plans | NextPage::Upgrade => {
                    h2 { "Plans" }
                    ul {
                        @for plan in [RealmPlan::Free, RealmPlan::Basic, RealmPlan::Business] {
                            li { (plan.name()) @if plan == realm.plan { " (current)" } }
                        }
                    }
                    p { "To change plans, contact sales; changes appear here once they are billed." }
                }
                NextPage::Sponsorship => {
                    p { "Community organisations can ask for a sponsored plan by writing to sales; the plan appears here once granted." }
                }
                NextPage::Deactivate => {
                    p { "Servers are deactivated by their contact, through the deactivation link an administrator sends." }
                }
                NextPage::Billing => {}
            }
        },
    )
}

/// The server deactivation page.
pub fn server(view: &ServerView) -> String {
    let server = &view.server;
    layout(
        "Deactivate server",
        html! {
            h1 { "Deactivate " (server.hostname) }
            @if view.server_plan_renews {
                p class="error" role="alert" id="server-paid-plan" { "This server has a paid plan; cancel it on the server's billing page before deactivating." }
            } @else if view.paid_realms.is_empty() {
                p { "Deactivating stops this server from sending anyone into billing. It cannot be undone here." }
                form method="post" action={ "/server/" (server.uuid) "/deactivate/" } {
                    (csrf_field(&view.csrf))
                    label {
                        input type="checkbox" id="confirmed" name="confirmed" value="true" required;
                        " Yes, deactivate this server."
                    }
                    button type="submit" id="deactivate" { "Deactivate" }
                }
            } @else {
                p class="error" { "These organisations have paid plans; end them before deactivating:" }
                ul { @for realm in &view.paid_realms { li { (realm.name) " (" (realm.plan.name()) ")" } } }
            }
        },
    )
}

/// The page saying the server was deactivated.
pub fn deactivated(hostname: &str) -> String {
    layout(
        "Server deactivated",
        html! {
            h1 { "Server deactivated" }
            p { (hostname) " has been deactivated from billing." }
        },
    )
}

/// An error page: a heading, a sentence, and possibly a way back.
pub fn error(title: &str, message: &str, link: Option<(&str, &str)>) -> String {
    layout(
        title,
        html! {
            h1 { (title) }
            p class="error" id="error-message" { (message) }
            @if let Some((href, text)) = link {
                p { a href=(href) { (text) } }
            }
        },
    )
}
