//! The HTTP face of the sandbox: Stripe's authentication, form parameters, idempotency keys,
//! request ids and error shapes; the routing of v1 paths to the resources in `api.rs`; and
//! the controls tests use (`/_sandbox/...`): failing the next calls, adding latency, pointing
//! webhooks somewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::{Failure, Outcome, State, invalid};
use crate::form;
use crate::objects::{API_VERSION, PriceSpec};
use crate::webhooks::{Order, Sender, WebhookTarget};

/// What Stripe keeps under an idempotency key.
#[derive(Clone)]
enum Kept {
    /// A request with this key is executing now.
    InFlight { fingerprint: String },
    Done {
        fingerprint: String,
        status: u16,
        body: Value,
        request_id: String,
        /// When the key was first used, by the sandbox's clock.
        first_used: i64,
    },
}

/// How long a key is kept: Stripe keeps a key at least 24 hours and may forget it after, so
/// the sandbox forgets it then, by its own clock, and a retry a day later is a new request.
pub const IDEMPOTENCY_KEY_LIFETIME: i64 = 24 * 60 * 60;

#[derive(Default)]
struct Controls {
    /// The next `fail_remaining` API calls answer `fail_status` without doing anything.
    fail_remaining: u32,
    fail_status: u16,
    /// Only calls whose path starts with this fail; all calls when `None`.
    fail_path: Option<String>,
    /// Only calls whose (decoded) parameters contain this text fail; all when `None`.
    fail_body: Option<String>,
    /// Whether the failing calls are done first (the answer is what is lost) or not at all.
    fail_after: bool,
    latency: Duration,
    webhook: Option<WebhookTarget>,
    /// API calls answered so far (what a rate limit counts).
    served: u64,
}

/// The sandbox: shared, cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    state: Arc<Mutex<State>>,
    kept: Arc<Mutex<HashMap<String, Kept>>>,
    controls: Arc<Mutex<Controls>>,
    sender: Sender,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Sandbox {
    /// A sandbox offering `prices`. Needs a Tokio runtime (webhooks are sent from a task).
    pub fn new(prices: &[PriceSpec]) -> Self {
        Sandbox {
            state: Arc::new(Mutex::new(State::new(prices, now()))),
            kept: Arc::new(Mutex::new(HashMap::new())),
            controls: Arc::new(Mutex::new(Controls::default())),
            sender: Sender::start(),
        }
    }

    /// Makes the next `count` API calls fail with `status` (500, 502, 503, 429...) before they
    /// do anything, as when Stripe or the network between fails.
    pub fn fail_next(&self, count: u32, status: u16) {
        self.fail_next_on(count, status, None);
    }

    /// Like [`Sandbox::fail_next`], counting only calls to paths starting with `path`
    /// (`/v1/subscriptions`), or to one method and path (`POST /v1/invoices/*/pay`, `*` any
    /// one segment), so a test can fail one step of a sequence.
    pub fn fail_next_on(&self, count: u32, status: u16, path: Option<&str>) {
        self.fail_next_matching(count, status, path, None);
    }

    /// Like [`Sandbox::fail_next_on`], counting only calls whose decoded parameters contain
    /// `text` (an email, a customer id), so a test can fail one item of a batch.
    pub fn fail_next_matching(&self, count: u32, status: u16, path: Option<&str>, text: Option<&str>) {
        let mut controls = lock(&self.controls);
        controls.fail_remaining = count;
        controls.fail_status = status;
        controls.fail_path = path.map(str::to_owned);
        controls.fail_body = text.map(str::to_owned);
        controls.fail_after = false;
    }

    /// Like [`Sandbox::fail_next_matching`], but each failing call is done first and only its
    /// answer is lost (`status` instead), as when the connection breaks after Stripe acted:
    /// the caller cannot tell whether anything happened.
    pub fn fail_next_after(&self, count: u32, status: u16, path: Option<&str>, text: Option<&str>) {
        self.fail_next_matching(count, status, path, text);
        lock(&self.controls).fail_after = true;
    }

    /// How many API calls reached the sandbox's handlers (past the idempotency replay and the
    /// injected failures): what Stripe's rate limit would count.
    pub fn requests_served(&self) -> u64 {
        lock(&self.controls).served
    }

    /// Adds `latency` to every API call from now on.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.controls).latency = latency;
    }

    /// Sends every event from now on to `target`.
    pub fn set_webhook(&self, target: Option<WebhookTarget>) {
        lock(&self.controls).webhook = target;
    }

    /// Every event made so far, oldest first.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.state).events().to_vec()
    }

    /// Holds webhook events back until [`Sandbox::release_webhooks`].
    pub fn hold_webhooks(&self) {
        self.sender.hold();
    }

    /// Sends the held events in `order` with `duplicates` extra copies mixed in.
    pub fn release_webhooks(&self, order: Order, duplicates: usize) -> usize {
        self.sender.release(order, duplicates)
    }

    /// Sends an event again, as Stripe's dashboard "resend" does. False when unknown.
    pub fn replay(&self, event_id: &str) -> bool {
        let event = lock(&self.state).events().iter().find(|e| e["id"] == event_id).cloned();
        match (event, lock(&self.controls).webhook.clone()) {
            (Some(event), Some(target)) => {
                self.sender.enqueue(target, event);
                true
            }
            _ => false,
        }
    }

    /// The sandbox's time: real time plus what [`Sandbox::advance_clock`] added.
    pub fn now(&self) -> i64 {
        now() + self.sender.clock_offset.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How far the sandbox's clock is ahead of real time, in seconds.
    pub fn clock_offset(&self) -> i64 {
        self.sender.clock_offset.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Moves the sandbox's time `seconds` forward, as a Stripe test clock does: the renewals,
    /// trial ends, cancellations at period end and trial notices that fall due happen, each at
    /// its own time, and their events are sent (signed at the new time). Returns the events'
    /// ids.
    pub fn advance_clock(&self, seconds: u64) -> Vec<String> {
        self.set_clock_offset(
            self.clock_offset()
                .saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX)),
        )
    }

    /// Sets the sandbox's clock to real time + `offset` seconds. Moving it forward makes what
    /// falls due happen (see [`Sandbox::advance_clock`]); moving it back makes nothing un-happen.
    pub fn set_clock_offset(&self, offset: i64) -> Vec<String> {
        let events = {
            // The state's lock orders this against requests: none sees the new time before
            // what fell due by it has happened.
            let mut state = lock(&self.state);
            let before = self.now();
            self.sender
                .clock_offset
                .store(offset, std::sync::atomic::Ordering::SeqCst);
            let after = self.now();
            if after > before {
                state.advance_clock(before, after)
            } else {
                Vec::new()
            }
        };
        self.send_events(events)
    }

    fn send_events(&self, events: Vec<Value>) -> Vec<String> {
        let target = lock(&self.controls).webhook.clone();
        events
            .into_iter()
            .map(|event| {
                let id = event["id"].as_str().unwrap_or_default().to_owned();
                if let Some(target) = &target {
                    self.sender.enqueue(target.clone(), event);
                }
                id
            })
            .collect()
    }

    /// Charges a renewal of `subscription` now, paid with its card or failing, as a test clock
    /// advancing past the period's end would (see `State::renewal`), and sends its events to
    /// the webhook endpoint. Returns the events' ids; `None` for a trialing or canceled
    /// subscription, which has nothing to renew.
    pub fn renewal(&self, subscription: &str, pays: bool) -> Option<Vec<String>> {
        let events = lock(&self.state).renewal(subscription, pays, self.now())?;
        Some(self.send_events(events))
    }

    /// Makes Stripe's three-days-before notice for a trialing subscription now, as a test clock
    /// would. Returns the event id.
    pub fn trial_will_end(&self, subscription: &str) -> Option<String> {
        let event = lock(&self.state).trial_will_end(subscription, self.now())?;
        if let Some(target) = lock(&self.controls).webhook.clone() {
            self.sender.enqueue(target, event.clone());
        }
        event["id"].as_str().map(str::to_owned)
    }

    /// Every webhook delivery attempted so far.
    pub fn deliveries(&self) -> Vec<Value> {
        lock(&self.sender.deliveries).iter().map(|d| d.to_json()).collect()
    }

    pub fn router(&self) -> axum::Router {
        axum::Router::new().fallback(handle).with_state(self.clone())
    }

    fn take_failure(&self, method: &Method, path: &str, parameters: &str, after: bool) -> Option<u16> {
        let mut controls = lock(&self.controls);
        if controls.fail_after != after {
            return None;
        }
        let applies = controls
            .fail_path
            .as_deref()
            .is_none_or(|pattern| path_matches(pattern, method, path))
            && controls
                .fail_body
                .as_deref()
                .is_none_or(|text| parameters.contains(text));
        if controls.fail_remaining == 0 || !applies {
            return None;
        }
        controls.fail_remaining -= 1;
        Some(controls.fail_status)
    }
}

fn stripe_response(status: u16, body: &Value, request_id: &str, extra: &[(&'static str, &str)]) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        serde_json::to_string_pretty(body).unwrap_or_default(),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("stripe-version", HeaderValue::from_static(API_VERSION));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("request-id", value);
    }
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(*name, value);
        }
    }
    response
}

fn failure_response(failure: &Failure, request_id: &str) -> Response {
    stripe_response(failure.status, &failure.body, request_id, &[])
}

/// The API key of the request: `Authorization: Bearer sk_test_...`, or Basic with the key as
/// the user name, as Stripe accepts both.
fn api_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().to_owned());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split(':').next().unwrap_or_default().to_owned())
}

async fn handle(
    Extract(sandbox): Extract<Sandbox>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = format!("req_{}", &uuid::Uuid::new_v4().simple().to_string()[..14]);
    let path = uri.path().to_owned();
    if let Some(control) = path.strip_prefix("/_sandbox/") {
        return controls(&sandbox, &method, control, &body);
    }
    if let Some(session) = path.strip_prefix("/checkout/") {
        return checkout_page(&sandbox, &method, session.trim_end_matches('/'), &body);
    }
    match api_key(&headers) {
        None => {
            return failure_response(
                &Failure {
                    status: 401,
                    body: json!({"error": {"type": "invalid_request_error", "message": "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."}}),
                    saved: false,
                },
                &request_id,
            );
        }
        Some(key) if !(key.starts_with("sk_test_") || key.starts_with("rk_test_")) => {
            return failure_response(
                &Failure {
                    status: 401,
                    body: json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: the Stripe sandbox accepts test-mode keys (sk_test_...) only."}}),
                    saved: false,
                },
                &request_id,
            );
        }
        Some(_) => {}
    }
    let raw = if method == Method::POST {
        let form_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|t| t.starts_with("application/x-www-form-urlencoded"));
        if !body.is_empty() && !form_type {
            return failure_response(
                &invalid(
                    None,
                    "Invalid request: Stripe's API takes application/x-www-form-urlencoded bodies.",
                ),
                &request_id,
            );
        }
        String::from_utf8_lossy(&body).into_owned()
    } else {
        uri.query().unwrap_or("").to_owned()
    };
    let params = match form::parse(&raw) {
        Ok(params) => params,
        Err(form::FormError(message)) => return failure_response(&invalid(None, message), &request_id),
    };
    if let Some(status) = sandbox.take_failure(&method, &path, &form::decode(&raw), false) {
        return injected_failure(status, &request_id);
    }
    let lost_answer = sandbox.take_failure(&method, &path, &form::decode(&raw), true);
    let idempotency_key = (method == Method::POST)
        .then(|| {
            headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .flatten();
    let fingerprint = format!("{method} {path} {params}");
    if let Some(key) = &idempotency_key {
        if key.len() > 255 {
            return failure_response(
                &invalid(None, "Idempotency keys can be at most 255 characters."),
                &request_id,
            );
        }
        let mut kept = lock(&sandbox.kept);
        let now = sandbox.now();
        if matches!(kept.get(key), Some(Kept::Done { first_used, .. }) if now - first_used >= IDEMPOTENCY_KEY_LIFETIME)
        {
            kept.remove(key);
        }
        match kept.get(key) {
            Some(Kept::Done {
                fingerprint: first,
                status,
                body,
                request_id: original,
                ..
            }) => {
                if *first != fingerprint {
                    return idempotency_mismatch(key, &request_id);
                }
                if let Some(status) = lost_answer {
                    return injected_failure(status, &request_id);
                }
                return stripe_response(
                    *status,
                    body,
                    &request_id,
                    &[("idempotent-replayed", "true"), ("original-request", original)],
                );
            }
            Some(Kept::InFlight { fingerprint: first }) => {
                if *first != fingerprint {
                    return idempotency_mismatch(key, &request_id);
                }
                let failure = Failure {
                    status: 409,
                    body: json!({"error": {"type": "idempotency_error", "message": "There is currently another in-progress request using this Stripe-Idempotency-Key. Please try again later."}}),
                    saved: false,
                };
                return failure_response(&failure, &request_id);
            }
            None => {
                kept.insert(
                    key.clone(),
                    Kept::InFlight {
                        fingerprint: fingerprint.clone(),
                    },
                );
            }
        }
    }
    let latency = {
        let mut controls = lock(&sandbox.controls);
        controls.served += 1;
        controls.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (outcome, events) = {
        let mut state = lock(&sandbox.state);
        state.request = (request_id.clone(), idempotency_key.clone());
        if let Some(host) = headers.get("host").and_then(|h| h.to_str().ok()) {
            state.public_base = format!("http://{host}");
        }
        let outcome = route(&mut state, &method, &path, &params, sandbox.now());
        (outcome, std::mem::take(&mut state.emitted))
    };
    let (status, body, saved) = match outcome {
        Ok(body) => (200, body, true),
        Err(failure) => (failure.status, failure.body, failure.saved),
    };
    if let Some(key) = idempotency_key {
        let mut kept = lock(&sandbox.kept);
        if saved {
            kept.insert(
                key,
                Kept::Done {
                    fingerprint,
                    status,
                    body: body.clone(),
                    request_id: request_id.clone(),
                    first_used: sandbox.now(),
                },
            );
        } else {
            kept.remove(&key);
        }
    }
    if let Some(target) = lock(&sandbox.controls).webhook.clone() {
        for event in events {
            sandbox.sender.enqueue(target.clone(), event);
        }
    }
    if let Some(status) = lost_answer {
        return injected_failure(status, &request_id);
    }
    stripe_response(status, &body, &request_id, &[])
}

/// Whether a failure's `pattern` names the call: a path prefix (`/v1/subscriptions`), or a
/// method and a path whose `*` segments match any one segment (`POST /v1/invoices/*/pay`; a
/// pattern with a method matches the whole path).
fn path_matches(pattern: &str, method: &Method, path: &str) -> bool {
    match pattern.split_once(' ') {
        None => path.starts_with(pattern),
        Some((wanted, pattern)) => {
            let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
            let wanted_segments: Vec<&str> = pattern.trim_matches('/').split('/').collect();
            wanted.eq_ignore_ascii_case(method.as_str())
                && segments.len() == wanted_segments.len()
                && segments
                    .iter()
                    .zip(&wanted_segments)
                    .all(|(segment, wanted)| *wanted == "*" || segment == wanted)
        }
    }
}

/// The answer of a call failed on purpose.
fn injected_failure(status: u16, request_id: &str) -> Response {
    let (kind, message) = match status {
        429 => ("rate_limit_error", "Too many requests hit the API too quickly."),
        _ => (
            "api_error",
            "An unknown error occurred while processing the request (injected by the Stripe sandbox).",
        ),
    };
    stripe_response(
        status,
        &json!({"error": {"type": kind, "message": message}}),
        request_id,
        &[],
    )
}

/// Stripe's hosted Checkout page for a setup session: one form taking a test payment method.
fn checkout_page(sandbox: &Sandbox, method: &Method, id: &str, body: &[u8]) -> Response {
    let now = sandbox.now();
    let page = |status: StatusCode, session: Option<&Value>, error: Option<&str>| {
        let escape = |text: &str| {
            text.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let email = session
            .and_then(|s| s["customer_details"]["email"].as_str())
            .map(escape)
            .unwrap_or_default();
        let cancel = session
            .and_then(|s| s["cancel_url"].as_str())
            .map(|url| format!(r#"<p><a href="{}">Cancel</a></p>"#, escape(url)))
            .unwrap_or_default();
        let error = error
            .map(|e| format!(r#"<p role="alert" id="checkout-error">{}</p>"#, escape(e)))
            .unwrap_or_default();
        let form = if session.is_some() {
            format!(
                r#"<form method="post" action="/checkout/{id}"><label for="payment_method">Test payment method</label>
<input id="payment_method" name="payment_method" value="pm_card_visa" autocomplete="off" required>
<button type="submit" id="save-card">Save card</button></form>{cancel}"#,
                id = escape(id)
            )
        } else {
            String::new()
        };
        let html = format!(
            r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Save a card · Stripe sandbox</title>
<style>body{{font-family:system-ui,sans-serif;max-width:30rem;margin:3rem auto}}label{{display:block}}input{{width:100%;padding:.5rem}}button{{margin-top:1rem;padding:.6rem 1.2rem}}[role=alert]{{color:#a00}}</style></head>
<body><main><h1>Save a card</h1><p>Stripe sandbox Checkout for {email}. Any of Stripe's test payment methods works, e.g. <code>pm_card_visa</code>.</p>{error}{form}</main></body></html>"#
        );
        let mut response = (status, html).into_response();
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("text/html; charset=utf-8"));
        response
    };
    if *method == Method::GET {
        return match lock(&sandbox.state).open_checkout_session(id, now) {
            Ok(session) => page(StatusCode::OK, Some(&session), None),
            Err(message) => page(StatusCode::NOT_FOUND, None, Some(&message)),
        };
    }
    if *method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let payment_method = form::parse(&String::from_utf8_lossy(body))
        .ok()
        .and_then(|fields| fields["payment_method"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let (outcome, events, session) = {
        let mut state = lock(&sandbox.state);
        state.request = (
            format!("req_{}", &uuid::Uuid::new_v4().simple().to_string()[..14]),
            None,
        );
        let outcome = state.complete_checkout_session(id, payment_method.trim(), now);
        let session = state.open_checkout_session(id, now).ok();
        (outcome, std::mem::take(&mut state.emitted), session)
    };
    sandbox.send_events(events);
    match outcome {
        Ok(crate::api::Completed::Redirect(location)) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert("location", value);
            }
            response
        }
        Err(message) => page(StatusCode::PAYMENT_REQUIRED, session.as_ref(), Some(&message)),
    }
}

fn idempotency_mismatch(key: &str, request_id: &str) -> Response {
    let failure = Failure {
        status: 400,
        body: json!({"error": {"type": "idempotency_error", "message": format!(
            "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
        )}}),
        saved: false,
    };
    failure_response(&failure, request_id)
}

fn route(state: &mut State, method: &Method, path: &str, params: &Value, now: i64) -> Outcome {
    let expand = crate::api::expansions(params)?;
    let object = route_to_handler(state, method, path, params, now)?;
    Ok(state.expand(object, &expand))
}

fn route_to_handler(state: &mut State, method: &Method, path: &str, params: &Value, now: i64) -> Outcome {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["v1", "customers"]) => state.list_customers(params),
        ("POST", ["v1", "customers"]) => state.create_customer(params, now),
        ("GET", ["v1", "customers", id]) => state.retrieve_customer(id, params),
        ("POST", ["v1", "customers", id]) => state.update_customer(id, params, now),
        ("DELETE", ["v1", "customers", id]) => state.delete_customer(id, params, now),
        ("GET", ["v1", "subscriptions"]) => state.list_subscriptions(params),
        ("POST", ["v1", "subscriptions"]) => state.create_subscription(params, now),
        ("GET", ["v1", "subscriptions", id]) => state.retrieve_subscription(id, params),
        ("POST", ["v1", "subscriptions", id]) => state.update_subscription(id, params, now),
        ("DELETE", ["v1", "subscriptions", id]) => state.cancel_subscription(id, params, now),
        ("GET", ["v1", "prices"]) => state.list_prices(params),
        ("GET", ["v1", "prices", id]) => state.retrieve_price(id, params),
        ("POST", ["v1", "prices"]) => state.create_price(params, now),
        ("POST", ["v1", "products"]) => state.create_product(params, now),
        ("GET", ["v1", "products", id]) => state.retrieve_product(id, params),
        ("GET", ["v1", "payment_methods"]) => state.list_payment_methods(params),
        ("GET", ["v1", "payment_methods", id]) => state.retrieve_payment_method(id, params),
        ("POST", ["v1", "payment_methods", id, "attach"]) => state.attach_payment_method(id, params, now),
        ("POST", ["v1", "payment_methods", id, "detach"]) => state.detach_payment_method(id, params, now),
        ("GET", ["v1", "invoices"]) => state.list_invoices(params),
        ("POST", ["v1", "invoices"]) => state.create_invoice(params, now),
        ("POST", ["v1", "invoices", "create_preview"]) => state.create_preview(params, now),
        ("POST", ["v1", "invoices", id, "finalize"]) => state.finalize_invoice(id, params, now),
        ("POST", ["v1", "invoices", id, "pay"]) => state.pay_invoice(id, params, now),
        ("POST", ["v1", "invoiceitems"]) => state.create_invoice_item(params, now),
        ("GET", ["v1", "invoiceitems"]) => state.list_invoice_items(params),
        ("GET", ["v1", "invoices", id]) => state.retrieve_invoice(id, params),
        ("POST", ["v1", "invoices", id, "void"]) => state.void_invoice(id, params, now),
        ("POST", ["v1", "coupons"]) => state.create_coupon(params, now),
        ("GET", ["v1", "coupons", id]) => state.retrieve_coupon(id, params),
        ("POST", ["v1", "checkout", "sessions"]) => state.create_checkout_session(params, now),
        ("GET", ["v1", "checkout", "sessions", id]) => state.retrieve_checkout_session(id, params),
        ("POST", ["v1", "setup_intents"]) => state.create_setup_intent(params, now),
        ("GET", ["v1", "setup_intents"]) => state.list_setup_intents(params),
        ("GET", ["v1", "setup_intents", id]) => state.retrieve_setup_intent(id, params),
        ("POST", ["v1", "billing_portal", "sessions"]) => state.create_portal_session(params, now),
        ("POST", ["v1", "billing_portal", "configurations"]) => state.create_portal_configuration(params, now),
        ("GET", ["v1", "billing_portal", "configurations"]) => state.list_portal_configurations(params),
        ("GET", ["v1", "billing_portal", "configurations", id]) => state.retrieve_portal_configuration(id, params),
        ("GET", ["v1", "events"]) => state.list_events(params),
        ("GET", ["v1", "events", id]) => state.retrieve_event(id, params),
        _ => Err(Failure {
            status: 404,
            body: json!({"error": {"type": "invalid_request_error", "message": format!(
                "Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/."
            )}}),
            saved: false,
        }),
    }
}

/// `/_sandbox/...`: not Stripe's API, the sandbox's own controls (JSON in, JSON out).
fn controls(sandbox: &Sandbox, method: &Method, path: &str, body: &Bytes) -> Response {
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    };
    let answer = |status: StatusCode, body: Value| {
        (status, [("content-type", "application/json")], body.to_string()).into_response()
    };
    match (method.as_str(), path) {
        ("POST", "failures") => {
            let count = input["count"].as_u64().unwrap_or(1) as u32;
            let status = input["status"].as_u64().unwrap_or(500) as u16;
            if !(400..600).contains(&status) {
                return answer(StatusCode::BAD_REQUEST, json!({"error": "status must be 400-599"}));
            }
            let (path, text) = (input["path"].as_str(), input["matching"].as_str());
            // `"after": true`: the calls are done, only their answers are lost.
            let after = input["after"].as_bool().unwrap_or(false);
            if after {
                sandbox.fail_next_after(count, status, path, text);
            } else {
                sandbox.fail_next_matching(count, status, path, text);
            }
            answer(
                StatusCode::OK,
                json!({"failing_next": count, "status": status, "path": path, "matching": text, "after": after}),
            )
        }
        ("POST", "latency") => {
            let ms = input["ms"].as_u64().unwrap_or(0);
            sandbox.set_latency(Duration::from_millis(ms));
            answer(StatusCode::OK, json!({"latency_ms": ms}))
        }
        ("POST", "webhook") => {
            let target = match (input["url"].as_str(), input["secret"].as_str()) {
                (Some(url), Some(secret)) => Some(WebhookTarget {
                    url: url.to_owned(),
                    secret: secret.to_owned(),
                }),
                (None, None) => None,
                _ => {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "give url and secret, or neither to stop"}),
                    );
                }
            };
            sandbox.set_webhook(target);
            answer(StatusCode::OK, json!({"webhook": input}))
        }
        ("POST", "clock/advance") => match input["seconds"].as_u64() {
            Some(seconds) => {
                let events = sandbox.advance_clock(seconds);
                answer(StatusCode::OK, json!({"now": sandbox.now(), "events": events}))
            }
            None => answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "give seconds, a whole number of seconds to move forward (a test clock never goes back)"}),
            ),
        },
        ("GET", "clock") => answer(
            StatusCode::OK,
            json!({"now": sandbox.now(), "offset_seconds": sandbox.clock_offset()}),
        ),
        ("GET", "deliveries") => answer(StatusCode::OK, json!({"deliveries": sandbox.deliveries()})),
        ("POST", "webhook/hold") => {
            sandbox.hold_webhooks();
            answer(StatusCode::OK, json!({"holding": true}))
        }
        ("POST", "webhook/release") => {
            let order = match input["order"].as_str().unwrap_or("as_happened") {
                "as_happened" => Order::AsHappened,
                "reversed" => Order::Reversed,
                "shuffled" => Order::Shuffled,
                other => {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        json!({"error": format!("unknown order {other}")}),
                    );
                }
            };
            let sent = sandbox.release_webhooks(order, input["duplicates"].as_u64().unwrap_or(0) as usize);
            answer(StatusCode::OK, json!({"released": sent}))
        }
        ("POST", "webhook/replay") => match input["event"].as_str() {
            Some(id) if sandbox.replay(id) => answer(StatusCode::OK, json!({"replayed": id})),
            _ => answer(
                StatusCode::NOT_FOUND,
                json!({"error": "no such event, or no webhook endpoint"}),
            ),
        },
        ("POST", "trial_will_end") => match input["subscription"].as_str().and_then(|s| sandbox.trial_will_end(s)) {
            Some(event) => answer(StatusCode::OK, json!({"event": event})),
            None => answer(StatusCode::NOT_FOUND, json!({"error": "no such trialing subscription"})),
        },
        _ => answer(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no sandbox control {method} /_sandbox/{path}")}),
        ),
    }
}
