//! The Stripe resources the sandbox keeps and the v1 endpoints over them: customers,
//! subscriptions and their items, products and prices, payment methods (Stripe's test cards), and events.
//!
//! Every endpoint checks its parameters the way Stripe does (unknown parameter, missing
//! required parameter, no such object) and refuses what the sandbox does not implement rather
//! than silently ignoring it. Handlers are plain functions on [`State`]; the HTTP layer
//! (`server.rs`) adds authentication, idempotency, injected failures and latency.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::objects::{self, NewSubscription, PriceSpec, TestCard};

mod catalog;
mod checkout;
mod invoicing;

pub use checkout::Completed;
pub use invoicing::Charge;
use invoicing::{interval_changes, interval_seconds, period_of, status_after};

/// A refusal in Stripe's shape, and whether Stripe would keep it under an idempotency key
/// (only answers from requests that started executing are kept; parameter errors are not).
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub status: u16,
    pub body: Value,
    pub saved: bool,
}

fn error(status: u16, kind: &str, code: Option<&str>, param: Option<&str>, message: String, saved: bool) -> Failure {
    let mut error = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        error["code"] = Value::from(code);
        error["doc_url"] = Value::from(format!(
            "https://stripe.com/docs/error-codes/{}",
            code.replace('_', "-")
        ));
    }
    if let Some(param) = param {
        error["param"] = Value::from(param);
    }
    Failure {
        status,
        body: json!({ "error": error }),
        saved,
    }
}

pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Failure {
    error(400, "invalid_request_error", None, param, message.into(), false)
}

fn not_implemented(what: &str) -> Failure {
    invalid(None, format!("The Stripe sandbox does not implement {what}."))
}

fn no_such(kind: &str, id: &str, param: Option<&str>) -> Failure {
    error(
        404,
        "invalid_request_error",
        Some("resource_missing"),
        param,
        format!("No such {kind}: '{id}'"),
        false,
    )
}

fn card_declined(decline_code: &str) -> Failure {
    let mut failure = error(
        402,
        "card_error",
        Some("card_declined"),
        None,
        "Your card was declined.".to_owned(),
        true,
    );
    failure.body["error"]["decline_code"] = Value::from(decline_code);
    failure
}

pub type Outcome = Result<Value, Failure>;

/// What the sandbox holds. Objects are kept as the JSON they are returned as.
#[derive(Default)]
pub struct State {
    customers: BTreeMap<String, Value>,
    subscriptions: BTreeMap<String, Value>,
    payment_methods: BTreeMap<String, Value>,
    prices: BTreeMap<String, Value>,
    products: BTreeMap<String, Value>,
    invoices: BTreeMap<String, Value>,
    coupons: BTreeMap<String, Value>,
    discounts: BTreeMap<String, Value>,
    setup_intents: BTreeMap<String, Value>,
    invoice_items: BTreeMap<String, Value>,
    checkout_sessions: BTreeMap<String, Value>,
    portal_configurations: BTreeMap<String, Value>,
    /// What a subscription becomes once the open invoice of its pending update is paid
    /// (`payment_behavior=pending_if_incomplete`), by subscription id.
    pending_updates: BTreeMap<String, Value>,
    /// Where browsers reach the sandbox (`http://127.0.0.1:PORT`), as the request being
    /// executed addressed it: the base of Checkout pages.
    pub(crate) public_base: String,
    /// Proration lines waiting for a subscription's next invoice, by subscription id.
    pending_lines: BTreeMap<String, Vec<Value>>,
    /// Trials whose three-days notice was sent: (subscription, trial end).
    noticed: std::collections::BTreeSet<(String, i64)>,
    /// Newest last.
    events: Vec<Value>,
    /// Object ids in creation order, for lists (newest first).
    order: Vec<String>,
    /// Events made by the request being executed, handed to the webhook sender after it.
    pub(crate) emitted: Vec<Value>,
    pub(crate) request: (String, Option<String>),
}

/// Parameters of one request: the parsed form or query, and the names a handler accepts.
struct Params<'a>(&'a Map<String, Value>);

impl<'a> Params<'a> {
    fn new(value: &'a Value, allowed: &[&str]) -> Result<Self, Failure> {
        static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
        let map = value.as_object().unwrap_or(&EMPTY);
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(invalid(Some(unknown), format!("Received unknown parameter: {unknown}")));
        }
        let params = Params(map);
        Ok(params)
    }

    fn string(&self, name: &str) -> Result<Option<&'a str>, Failure> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(Some(name), format!("Invalid string: {name} must be a string"))),
        }
    }

    fn required(&self, name: &str) -> Result<&'a str, Failure> {
        self.string(name)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(Some(name), format!("Missing required param: {name}.")))
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, Failure> {
        match self.string(name)? {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(invalid(Some(name), format!("Invalid boolean: {other}"))),
        }
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, Failure> {
        match self.string(name)? {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| invalid(Some(name), format!("Invalid integer: {text}"))),
        }
    }

    fn one_of(&self, name: &str, values: &[&str]) -> Result<Option<&'a str>, Failure> {
        match self.string(name)? {
            Some(value) if !values.contains(&value) => Err(invalid(
                Some(name),
                format!("Invalid {name}: must be one of {}", values.join(", ")),
            )),
            other => Ok(other),
        }
    }

    /// `metadata[key]=value` pairs merged into `current`; `metadata=` (empty) clears them all,
    /// and an empty value removes one key, as in Stripe.
    fn metadata(&self, current: &Value) -> Result<Option<Value>, Failure> {
        let Some(given) = self.0.get("metadata") else {
            return Ok(None);
        };
        let mut merged = current.as_object().cloned().unwrap_or_default();
        match given {
            Value::String(s) if s.is_empty() => merged.clear(),
            Value::Object(pairs) => {
                for (key, value) in pairs {
                    let Value::String(value) = value else {
                        return Err(invalid(Some(&format!("metadata[{key}]")), "Invalid metadata value"));
                    };
                    if key.len() > 40 {
                        return Err(invalid(Some("metadata"), "Metadata keys can have up to 40 characters."));
                    }
                    if value.len() > 500 {
                        return Err(invalid(
                            Some("metadata"),
                            "Metadata values can have up to 500 characters.",
                        ));
                    }
                    if value.is_empty() {
                        merged.remove(key);
                    } else {
                        merged.insert(key.clone(), Value::from(value.as_str()));
                    }
                }
            }
            _ => return Err(invalid(Some("metadata"), "Invalid metadata: must be a hash")),
        }
        if merged.len() > 50 {
            return Err(invalid(Some("metadata"), "Metadata can have up to 50 keys."));
        }
        Ok(Some(Value::Object(merged)))
    }
}

/// The expansions a request asks for (`expand[]=`), refused before anything is done when the
/// sandbox cannot make them: a subscription's `discounts` (and their coupons) and its
/// `latest_invoice`.
pub fn expansions(params: &Value) -> Result<Vec<String>, Failure> {
    const EXPANDABLE: [&str; 3] = ["discounts", "discounts.source.coupon", "latest_invoice"];
    let Some(given) = params.get("expand") else {
        return Ok(Vec::new());
    };
    let paths: Vec<String> = match given {
        Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        Value::String(one) => vec![one.clone()],
        _ => return Err(invalid(Some("expand"), "Invalid array")),
    };
    match paths.iter().find(|p| !EXPANDABLE.contains(&p.as_str())) {
        Some(path) => Err(not_implemented(&format!("expand[]={path}"))),
        None => Ok(paths),
    }
}

fn short_id(prefix: &str) -> String {
    let raw = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &raw[..24])
}

/// Stripe's ids begin with a time-ordered part, so later objects sort after earlier ones; event
/// ids here do the same (a base-62 count of microseconds, then randomness), which is what lets a
/// consumer order two events of the same second by id.
fn ordered_id(prefix: &str) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    // Strictly increasing, even for two ids in the same microsecond.
    let previous = LAST
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |last| Some(now.max(last + 1)),
        )
        .unwrap_or(now);
    let mut value = now.max(previous + 1);
    let mut time = [b'0'; 11];
    for slot in time.iter_mut().rev() {
        *slot = DIGITS[(value % 62) as usize];
        value /= 62;
    }
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_1{}{}", String::from_utf8_lossy(&time), &random[..12])
}

impl State {
    /// `object` with the `paths` expanded where they apply to it (a subscription's).
    pub fn expand(&self, mut object: Value, paths: &[String]) -> Value {
        if object["object"] != "subscription" {
            return object;
        }
        for path in paths {
            match path.as_str() {
                "discounts" | "discounts.source.coupon" => {
                    let coupons = path.as_str() == "discounts.source.coupon";
                    let expanded: Vec<Value> = object["discounts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|entry| {
                            let id = entry.as_str().or_else(|| entry["id"].as_str()).unwrap_or_default();
                            let mut discount = self.discounts.get(id).cloned().unwrap_or_else(|| entry.clone());
                            if coupons
                                && let Some(coupon) =
                                    discount["source"]["coupon"].as_str().and_then(|c| self.coupons.get(c))
                            {
                                discount["source"]["coupon"] = coupon.clone();
                            }
                            discount
                        })
                        .collect();
                    object["discounts"] = Value::Array(expanded);
                }
                "latest_invoice" => {
                    if let Some(invoice) = object["latest_invoice"].as_str().and_then(|i| self.invoices.get(i)) {
                        object["latest_invoice"] = invoice.clone();
                    }
                }
                _ => {}
            }
        }
        object
    }

    pub fn new(prices: &[PriceSpec], now: i64) -> Self {
        let mut state = State::default();
        for spec in prices {
            state.prices.insert(spec.id.clone(), objects::price(spec, now));
            state.order.push(spec.id.clone());
        }
        state
    }

    pub fn events(&self) -> &[Value] {
        &self.events
    }

    fn emit(&mut self, kind: &str, object: &Value, previous: Option<Map<String, Value>>, now: i64) {
        let (request_id, idempotency_key) = (self.request.0.clone(), self.request.1.clone());
        let event = objects::event(
            &ordered_id("evt"),
            kind,
            now,
            object,
            previous,
            (&request_id, idempotency_key.as_deref()),
        );
        self.events.push(event.clone());
        self.emitted.push(event);
    }

    fn remember(&mut self, id: &str) {
        self.order.push(id.to_owned());
    }

    // Customers

    pub fn create_customer(&mut self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(
            params,
            &[
                "email",
                "name",
                "description",
                "phone",
                "metadata",
                "preferred_locales",
                "invoice_settings",
                "expand",
            ],
        )?;
        let id = short_id("cus");
        let prefix = uuid::Uuid::new_v4().simple().to_string()[..8].to_ascii_uppercase();
        let mut customer = objects::customer(&id, now, &prefix);
        self.apply_customer_fields(&p, &mut customer, true)?;
        self.customers.insert(id.clone(), customer.clone());
        self.remember(&id);
        self.emit("customer.created", &customer, None, now);
        Ok(customer)
    }

    fn apply_customer_fields(&self, p: &Params<'_>, customer: &mut Value, creating: bool) -> Result<(), Failure> {
        for field in ["email", "name", "description", "phone"] {
            if let Some(value) = p.string(field)? {
                if value.len() > 512 {
                    return Err(invalid(
                        Some(field),
                        format!("Invalid {field}: must be at most 512 characters"),
                    ));
                }
                customer[field] = if value.is_empty() {
                    Value::Null
                } else {
                    Value::from(value)
                };
            }
        }
        if let Some(metadata) = p.metadata(&customer["metadata"])? {
            customer["metadata"] = metadata;
        }
        if let Some(locales) = p.0.get("preferred_locales") {
            customer["preferred_locales"] = match locales {
                Value::Array(_) => locales.clone(),
                Value::String(s) if s.is_empty() => json!([]),
                _ => return Err(invalid(Some("preferred_locales"), "Invalid array")),
            };
        }
        if let Some(settings) = p.0.get("invoice_settings") {
            let settings = Params::new(settings, &["default_payment_method"]).map_err(|_| {
                invalid(
                    Some("invoice_settings"),
                    "The Stripe sandbox implements only invoice_settings[default_payment_method].",
                )
            })?;
            if let Some(method) = settings.string("default_payment_method")? {
                if creating && !method.is_empty() {
                    return Err(not_implemented("a default payment method on customer creation"));
                }
                let attached = self
                    .payment_methods
                    .get(method)
                    .is_some_and(|pm| pm["customer"] == customer["id"]);
                if !method.is_empty() && !attached {
                    return Err(invalid(
                        Some("invoice_settings[default_payment_method]"),
                        format!(
                            "The customer does not have a payment method with the ID {method}. The payment method must be attached to the customer."
                        ),
                    ));
                }
                customer["invoice_settings"]["default_payment_method"] = if method.is_empty() {
                    Value::Null
                } else {
                    Value::from(method)
                };
            }
        }
        Ok(())
    }

    fn live_customer(&self, id: &str, param: Option<&str>) -> Result<&Value, Failure> {
        self.customers
            .get(id)
            .filter(|c| c.get("deleted").is_none())
            .ok_or_else(|| no_such("customer", id, param))
    }

    pub fn retrieve_customer(&self, id: &str, params: &Value) -> Outcome {
        Params::new(params, &["expand"])?;
        self.customers
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("customer", id, None))
    }

    pub fn update_customer(&mut self, id: &str, params: &Value, now: i64) -> Outcome {
        let p = Params::new(
            params,
            &[
                "email",
                "name",
                "description",
                "phone",
                "metadata",
                "preferred_locales",
                "invoice_settings",
                "expand",
            ],
        )?;
        let before = self.live_customer(id, None)?.clone();
        let mut customer = before.clone();
        self.apply_customer_fields(&p, &mut customer, false)?;
        if customer != before {
            self.customers.insert(id.to_owned(), customer.clone());
            let previous = objects::previous_attributes(&before, &customer);
            self.emit("customer.updated", &customer, Some(previous), now);
        }
        Ok(customer)
    }

    pub fn delete_customer(&mut self, id: &str, params: &Value, now: i64) -> Outcome {
        Params::new(params, &[])?;
        let customer = self.live_customer(id, None)?.clone();
        let live: Vec<String> = self
            .subscriptions
            .values()
            .filter(|s| s["customer"] == customer["id"] && s["status"] != "canceled")
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect();
        for subscription in live {
            self.cancel_subscription(&subscription, &json!({}), now)?;
        }
        let deleted = json!({"id": id, "object": "customer", "deleted": true});
        self.customers.insert(id.to_owned(), deleted.clone());
        self.emit("customer.deleted", &customer, None, now);
        Ok(deleted)
    }

    pub fn list_customers(&self, params: &Value) -> Outcome {
        let p = Params::new(params, &["email", "limit", "starting_after", "expand"])?;
        let email = p.string("email")?;
        self.list("/v1/customers", &p, |id| {
            self.customers
                .get(id)
                .filter(|c| c.get("deleted").is_none())
                .filter(|c| email.is_none_or(|e| c["email"] == e))
        })
    }

    // Prices

    pub fn retrieve_price(&self, id: &str, params: &Value) -> Outcome {
        Params::new(params, &["expand"])?;
        self.prices.get(id).cloned().ok_or_else(|| no_such("price", id, None))
    }

    pub fn list_prices(&self, params: &Value) -> Outcome {
        let p = Params::new(
            params,
            &["limit", "starting_after", "active", "product", "lookup_keys", "expand"],
        )?;
        let active = p.boolean("active")?;
        let product = p.string("product")?;
        let lookup_keys: Option<Vec<&str>> = match params.get("lookup_keys") {
            None => None,
            Some(Value::Array(keys)) => Some(keys.iter().filter_map(Value::as_str).collect()),
            Some(_) => return Err(invalid(Some("lookup_keys"), "Invalid array: lookup_keys")),
        };
        self.list("/v1/prices", &p, |id| {
            self.prices.get(id).filter(|price| {
                active.is_none_or(|a| price["active"] == a)
                    && product.is_none_or(|p| price["product"] == p)
                    && lookup_keys
                        .as_ref()
                        .is_none_or(|keys| price["lookup_key"].as_str().is_some_and(|k| keys.contains(&k)))
            })
        })
    }

    // Payment methods

    /// Attaches a payment method to a customer. Stripe's test ids (`pm_card_visa`) make a new
    /// card payment method each time, as in Stripe's test mode.
    pub fn attach_payment_method(&mut self, id: &str, params: &Value, now: i64) -> Outcome {
        let p = Params::new(params, &["customer", "expand"])?;
        let customer = p.required("customer")?;
        self.live_customer(customer, Some("customer"))?;
        let mut method = match objects::test_card(id) {
            Some(card) => {
                if let Some(code) = card.declines_on_attach {
                    return Err(card_declined(code));
                }
                objects::payment_method(&short_id("pm"), card, now)
            }
            None => self
                .payment_methods
                .get(id)
                .cloned()
                .ok_or_else(|| no_such("PaymentMethod", id, None))?,
        };
        match method["customer"].as_str() {
            Some(owner) if owner == customer => return Ok(method),
            Some(_) => {
                return Err(invalid(
                    None,
                    "The payment method you provided has already been attached to a customer.",
                ));
            }
            None => {}
        }
        method["customer"] = Value::from(customer);
        let method_id = method["id"].as_str().unwrap_or_default().to_owned();
        self.payment_methods.insert(method_id.clone(), method.clone());
        self.remember(&method_id);
        self.emit("payment_method.attached", &method, None, now);
        Ok(method)
    }

    pub fn detach_payment_method(&mut self, id: &str, params: &Value, now: i64) -> Outcome {
        Params::new(params, &["expand"])?;
        let mut method = self
            .payment_methods
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("PaymentMethod", id, None))?;
        let Some(owner) = method["customer"].as_str().map(str::to_owned) else {
            return Err(invalid(
                None,
                "The payment method you provided is not attached to a customer so detachment is impossible.",
            ));
        };
        let before = method.clone();
        method["customer"] = Value::Null;
        self.payment_methods.insert(id.to_owned(), method.clone());
        let previous = objects::previous_attributes(&before, &method);
        self.emit("payment_method.detached", &method, Some(previous), now);
        // Detaching the customer's default clears it, which changes the customer: Stripe says
        // so with a `customer.updated` of its own.
        if let Some(customer) = self.customers.get(&owner)
            && customer["invoice_settings"]["default_payment_method"] == id
        {
            let before = customer.clone();
            let mut customer = before.clone();
            customer["invoice_settings"]["default_payment_method"] = Value::Null;
            self.customers.insert(owner.clone(), customer.clone());
            let previous = objects::previous_attributes(&before, &customer);
            self.emit("customer.updated", &customer, Some(previous), now);
        }
        Ok(method)
    }

    pub fn retrieve_payment_method(&self, id: &str, params: &Value) -> Outcome {
        Params::new(params, &["expand"])?;
        self.payment_methods
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("PaymentMethod", id, None))
    }

    pub fn list_payment_methods(&self, params: &Value) -> Outcome {
        let p = Params::new(params, &["customer", "type", "limit", "starting_after", "expand"])?;
        let customer = p.string("customer")?;
        p.one_of("type", &["card"])?;
        self.list("/v1/payment_methods", &p, |id| {
            self.payment_methods
                .get(id)
                .filter(|m| customer.is_none_or(|c| m["customer"] == c))
        })
    }

    fn card_of(&self, method: &str) -> Option<TestCard> {
        let method = self.payment_methods.get(method)?;
        let last4 = method["card"]["last4"].as_str()?;
        objects::TEST_CARDS.iter().copied().find(|c| c.last4 == last4)
    }

    // Subscriptions

    fn subscription_items(
        &self,
        subscription: &str,
        params: &Value,
        created: i64,
        period: (i64, i64),
    ) -> Result<Vec<Value>, Failure> {
        let Some(items) = params.as_array().filter(|a| !a.is_empty()) else {
            return Err(invalid(Some("items"), "Missing required param: items."));
        };
        let mut built = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let p = Params::new(item, &["price", "quantity", "metadata"]).map_err(|f| {
                invalid(
                    Some(&format!("items[{index}]")),
                    f.body["error"]["message"].as_str().unwrap_or("").to_owned(),
                )
            })?;
            let param = format!("items[{index}][price]");
            let price_id = p
                .string("price")?
                .ok_or_else(|| invalid(Some(&param), format!("Missing required param: {param}.")))?;
            let price = self.recurring_price(price_id, &param)?;
            let mut item = objects::subscription_item(&short_id("si"), subscription, &price, created, period);
            if let Some(quantity) = p.integer("quantity")? {
                if quantity < 0 {
                    return Err(invalid(
                        Some(&format!("items[{index}][quantity]")),
                        "Invalid quantity: must be at least 0",
                    ));
                }
                item["quantity"] = Value::from(quantity);
            }
            if let Some(metadata) = p.metadata(&json!({}))? {
                item["metadata"] = metadata;
            }
            built.push(item);
        }
        Ok(built)
    }

    fn recurring_price(&self, id: &str, param: &str) -> Result<Value, Failure> {
        let price = self.prices.get(id).ok_or_else(|| no_such("price", id, Some(param)))?;
        if price["type"] != "recurring" {
            return Err(invalid(
                Some(param),
                "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
            ));
        }
        Ok(price.clone())
    }

    /// The payment method a charge for `subscription` would use: its own default, else its
    /// customer's invoice default.
    fn paying_method(&self, subscription_default: &Value, customer: &str) -> Option<String> {
        subscription_default.as_str().map(str::to_owned).or_else(|| {
            self.customers
                .get(customer)
                .and_then(|c| c["invoice_settings"]["default_payment_method"].as_str())
                .map(str::to_owned)
        })
    }

    /// What charging `method` would do (no method: nothing to charge with).
    fn charge_with(&self, method: Option<&str>) -> Charge {
        match method.map(|m| self.card_of(m)) {
            None => Charge::NoPaymentMethod,
            Some(Some(card)) if card.charges_need_authentication => Charge::NeedsAuthentication,
            Some(Some(card)) if !card.charges_fail => Charge::Paid,
            Some(_) => Charge::Failed,
        }
    }

    /// Under `payment_behavior=error_if_incomplete`, a charge that did not go through is the
    /// request's error and nothing is kept.
    fn refuse_unpaid(charge: Charge) -> Result<(), Failure> {
        match charge {
            Charge::Paid | Charge::NotAttempted => Ok(()),
            Charge::NoPaymentMethod => Err(invalid(
                None,
                "This customer has no attached payment source or default payment method. Please consider adding a default payment method.",
            )),
            Charge::NeedsAuthentication => Err(card_declined("authentication_required")),
            Charge::Failed => Err(card_declined("generic_decline")),
        }
    }

    pub fn create_subscription(&mut self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(
            params,
            &[
                "customer",
                "items",
                "trial_end",
                "trial_period_days",
                "metadata",
                "default_payment_method",
                "cancel_at_period_end",
                "payment_behavior",
                "proration_behavior",
                "description",
                "off_session",
                "discounts",
                "expand",
            ],
        )?;
        let customer = p.required("customer")?;
        self.live_customer(customer, Some("customer"))?;
        let behavior = p
            .one_of(
                "payment_behavior",
                &[
                    "allow_incomplete",
                    "default_incomplete",
                    "error_if_incomplete",
                    "pending_if_incomplete",
                ],
            )?
            .unwrap_or("allow_incomplete");
        if behavior == "pending_if_incomplete" {
            return Err(invalid(
                Some("payment_behavior"),
                "pending_if_incomplete is only supported when updating a subscription.",
            ));
        }
        p.one_of("proration_behavior", &["always_invoice", "create_prorations", "none"])?;
        p.boolean("off_session")?;
        let trial_end = match (p.string("trial_end")?, p.integer("trial_period_days")) {
            (Some(_), Ok(Some(_))) => {
                return Err(invalid(
                    Some("trial_end"),
                    "You may not pass both trial_end and trial_period_days.",
                ));
            }
            (Some("now"), _) => None,
            (Some(text), _) => {
                let end: i64 = text
                    .parse()
                    .map_err(|_| invalid(Some("trial_end"), format!("Invalid timestamp: {text}")))?;
                if end <= now {
                    return Err(invalid(
                        Some("trial_end"),
                        "Invalid timestamp: must be an integer Unix timestamp in the future.",
                    ));
                }
                if end > now + 730 * 86_400 {
                    return Err(invalid(
                        Some("trial_end"),
                        "Invalid timestamp: can be no more than two years in the future.",
                    ));
                }
                Some(end)
            }
            (None, Ok(Some(days))) if (0..=730).contains(&days) => (days > 0).then_some(now + days * 86_400),
            (None, Ok(Some(_))) => {
                return Err(invalid(
                    Some("trial_period_days"),
                    "Invalid trial_period_days: must be between 0 and 730",
                ));
            }
            (None, Ok(None)) => None,
            (None, Err(e)) => return Err(e),
        };
        let default_method = match p.string("default_payment_method")? {
            Some(method) => {
                let attached = self
                    .payment_methods
                    .get(method)
                    .is_some_and(|m| m["customer"] == customer);
                if !attached {
                    return Err(invalid(
                        Some("default_payment_method"),
                        format!(
                            "The customer does not have a payment method with the ID {method}. The payment method must be attached to the customer."
                        ),
                    ));
                }
                Value::from(method)
            }
            None => Value::Null,
        };
        let id = short_id("sub");
        let items_param = params.get("items").cloned().unwrap_or(Value::Null);
        // The period is settled once the items (and so the interval) are known.
        let probe = self.subscription_items(&id, &items_param, now, (now, now))?;
        let interval = probe[0]["price"]["recurring"]["interval"].clone();
        if probe.iter().any(|i| i["price"]["recurring"]["interval"] != interval) {
            return Err(invalid(
                Some("items"),
                "Currency and interval fields must match across all plans on this subscription.",
            ));
        }
        let period = match trial_end {
            Some(end) => (now, end),
            None => (now, now + interval_seconds(interval.as_str().unwrap_or("month"))),
        };
        let items = self.subscription_items(&id, &items_param, now, period)?;
        let amount: i64 = items
            .iter()
            .map(|i| i["price"]["unit_amount"].as_i64().unwrap_or(0) * i["quantity"].as_i64().unwrap_or(1))
            .sum();
        let charge = if trial_end.is_some() || amount == 0 {
            Charge::Paid
        } else if behavior == "default_incomplete" {
            Charge::NotAttempted
        } else {
            self.charge_with(self.paying_method(&default_method, customer).as_deref())
        };
        if behavior == "error_if_incomplete" {
            Self::refuse_unpaid(charge)?;
        }
        let status = match (trial_end, charge) {
            (Some(_), _) => "trialing",
            (None, Charge::Paid) => "active",
            (None, _) => "incomplete",
        };
        let currency = items[0]["price"]["currency"].as_str().unwrap_or("usd").to_owned();
        let metadata = p.metadata(&json!({}))?.unwrap_or_else(|| json!({}));
        let mut subscription = objects::subscription(NewSubscription {
            id: &id,
            customer,
            created: now,
            items,
            currency: &currency,
            status,
            trial: trial_end.map(|end| (now, end)),
            metadata,
            default_payment_method: default_method,
            cancel_at_period_end: p.boolean("cancel_at_period_end")?.unwrap_or(false),
            description: p.string("description")?.map_or(Value::Null, Value::from),
        });
        if let Some(discounts) = params.get("discounts") {
            self.apply_discounts(&mut subscription, discounts, now)?;
        }
        if let Some(c) = self.customers.get_mut(customer) {
            c["currency"] = Value::from(currency);
        }
        // The first invoice: the first period, or nothing to pay during a trial.
        let mut lines = Self::period_lines(&subscription, period);
        if trial_end.is_some() {
            for line in &mut lines {
                line["amount"] = json!(0);
                line["subtotal"] = json!(0);
                line["description"] = json!(format!(
                    "Trial period for {}",
                    line["description"].as_str().unwrap_or("")
                ));
            }
        }
        let draft = self.draft_invoice(&subscription, "subscription_create", lines, period, now);
        let (invoice, charge) = self.finalize_and_charge(draft, charge, now);
        subscription["latest_invoice"] = invoice["id"].clone();
        self.subscriptions.insert(id.clone(), subscription.clone());
        self.remember(&id);
        self.emit("customer.subscription.created", &subscription, None, now);
        self.emit_invoice_outcome(&invoice, charge, now);
        Ok(subscription)
    }

    pub fn retrieve_subscription(&self, id: &str, params: &Value) -> Outcome {
        Params::new(params, &["expand"])?;
        self.subscriptions
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("subscription", id, None))
    }

    pub fn list_subscriptions(&self, params: &Value) -> Outcome {
        let p = Params::new(
            params,
            &["customer", "price", "status", "limit", "starting_after", "expand"],
        )?;
        let customer = p.string("customer")?;
        let price = p.string("price")?;
        let status = p.one_of(
            "status",
            &[
                "active",
                "all",
                "canceled",
                "ended",
                "incomplete",
                "incomplete_expired",
                "past_due",
                "paused",
                "trialing",
                "unpaid",
            ],
        )?;
        self.list("/v1/subscriptions", &p, |id| {
            self.subscriptions.get(id).filter(|s| {
                customer.is_none_or(|c| s["customer"] == c)
                    && price.is_none_or(|pr| {
                        s["items"]["data"]
                            .as_array()
                            .is_some_and(|i| i.iter().any(|i| i["price"]["id"] == pr))
                    })
                    && match status {
                        None => s["status"] != "canceled" && s["status"] != "incomplete_expired",
                        Some("all") => true,
                        Some("ended") => s["status"] == "canceled" || s["status"] == "incomplete_expired",
                        Some(wanted) => s["status"] == wanted,
                    }
            })
        })
    }

    pub fn update_subscription(&mut self, id: &str, params: &Value, now: i64) -> Outcome {
        let p = Params::new(
            params,
            &[
                "items",
                "cancel_at_period_end",
                "default_payment_method",
                "metadata",
                "proration_behavior",
                "payment_behavior",
                "trial_end",
                "description",
                "off_session",
                "discounts",
                "billing_cycle_anchor",
                "expand",
            ],
        )?;
        let before = self
            .subscriptions
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("subscription", id, None))?;
        if before["status"] == "canceled" {
            let only_metadata = p.0.keys().all(|k| k == "metadata" || k == "expand");
            if !only_metadata {
                return Err(invalid(
                    None,
                    "A canceled subscription can only update its cancellation_details and metadata.",
                ));
            }
        }
        let proration = p
            .one_of("proration_behavior", &["always_invoice", "create_prorations", "none"])?
            .unwrap_or("create_prorations");
        let behavior = p
            .one_of(
                "payment_behavior",
                &[
                    "allow_incomplete",
                    "default_incomplete",
                    "error_if_incomplete",
                    "pending_if_incomplete",
                ],
            )?
            .unwrap_or("allow_incomplete");
        p.boolean("off_session")?;
        let customer = before["customer"].as_str().unwrap_or_default().to_owned();
        let mut subscription = before.clone();
        if let Some(flag) = p.boolean("cancel_at_period_end")? {
            subscription["cancel_at_period_end"] = Value::from(flag);
            let period_end = subscription["items"]["data"][0]["current_period_end"].clone();
            subscription["cancel_at"] = if flag { period_end } else { Value::Null };
        }
        if let Some(description) = p.string("description")? {
            subscription["description"] = if description.is_empty() {
                Value::Null
            } else {
                Value::from(description)
            };
        }
        if let Some(metadata) = p.metadata(&subscription["metadata"])? {
            subscription["metadata"] = metadata;
        }
        if let Some(method) = p.string("default_payment_method")? {
            let attached = self
                .payment_methods
                .get(method)
                .is_some_and(|m| m["customer"] == customer.as_str());
            if !method.is_empty() && !attached {
                return Err(invalid(
                    Some("default_payment_method"),
                    format!(
                        "The customer does not have a payment method with the ID {method}. The payment method must be attached to the customer."
                    ),
                ));
            }
            subscription["default_payment_method"] = if method.is_empty() {
                Value::Null
            } else {
                Value::from(method)
            };
        }
        if let Some(items) = params.get("items") {
            self.update_items(&mut subscription, items, now)?;
        }
        let mut end_trial_now = false;
        match p.string("trial_end")? {
            None => {}
            Some("now") if subscription["status"] == "trialing" => {
                subscription["trial_end"] = Value::from(now);
                end_trial_now = true;
            }
            Some("now") => {}
            Some(text) => {
                let end: i64 = text
                    .parse()
                    .map_err(|_| invalid(Some("trial_end"), format!("Invalid timestamp: {text}")))?;
                if end <= now {
                    return Err(invalid(
                        Some("trial_end"),
                        "Invalid timestamp: must be an integer Unix timestamp in the future.",
                    ));
                }
                subscription["trial_end"] = Value::from(end);
                if subscription["trial_start"].is_null() {
                    subscription["trial_start"] = Value::from(now);
                }
                subscription["status"] = Value::from("trialing");
                for item in subscription["items"]["data"].as_array_mut().into_iter().flatten() {
                    item["current_period_end"] = Value::from(end);
                }
            }
        }
        if let Some(discounts) = params.get("discounts") {
            self.apply_discounts(&mut subscription, discounts, now)?;
        }
        if end_trial_now {
            // The trial ends now: the first paid period starts, invoiced at once.
            if behavior == "error_if_incomplete" {
                Self::refuse_unpaid(self.charge_for(&subscription))?;
            }
            return Ok(self.start_period(&before, subscription, now, None));
        }
        let trialing = subscription["status"] == "trialing";
        let anchor = p.one_of("billing_cycle_anchor", &["now", "unchanged"])?;
        // A new interval (monthly to annual) always starts a new period now, as does an explicit
        // `billing_cycle_anchor=now`; the period is invoiced at once, the old one's unused time
        // credited.
        let resets_anchor = !trialing
            && before["status"] != "incomplete"
            && anchor != Some("unchanged")
            && (anchor == Some("now") || interval_changes(&before, &subscription));
        if anchor == Some("unchanged") && interval_changes(&before, &subscription) {
            return Err(invalid(
                Some("billing_cycle_anchor"),
                "The billing cycle anchor cannot stay unchanged when the billing interval changes.",
            ));
        }
        let prorations = if resets_anchor {
            Self::start_new_period(&mut subscription, now);
            Self::anchor_reset_lines(&before, &subscription, proration, now)
        } else if trialing || proration == "none" || before["status"] == "incomplete" {
            Vec::new()
        } else {
            Self::proration_lines(&before, &subscription, now)
        };
        let mut invoiced = None;
        if resets_anchor || (proration == "always_invoice" && !prorations.is_empty()) {
            let charge = self.charge_for(&subscription);
            if behavior == "error_if_incomplete" {
                Self::refuse_unpaid(charge)?;
            }
            let pending_if_unpaid = behavior == "pending_if_incomplete";
            // A pending update's invoice holds only the update: the lines waiting for the next
            // invoice stay there whatever becomes of it.
            let waiting = if pending_if_unpaid {
                Vec::new()
            } else {
                self.take_pending(id)
            };
            let lines = waiting.into_iter().chain(prorations).collect();
            let period = if resets_anchor {
                period_of(&subscription)
            } else {
                (now, now)
            };
            let draft = self.draft_invoice(&subscription, "subscription_update", lines, period, now);
            let (invoice, charge) = self.finalize_and_charge(draft, charge, now);
            if pending_if_unpaid && charge != Charge::Paid {
                subscription = self.hold_as_pending_update(&before, subscription, &invoice, now);
            } else {
                subscription["latest_invoice"] = invoice["id"].clone();
                let status = status_after(charge, subscription["status"].as_str().unwrap_or_default()).to_owned();
                subscription["status"] = json!(status);
            }
            invoiced = Some((invoice, charge));
        } else {
            self.add_pending(id, prorations);
        }
        // An incomplete subscription's first invoice is paid once the customer can be charged.
        if before["status"] == "incomplete"
            && let Some(latest) = before["latest_invoice"].as_str().map(str::to_owned)
            && self.invoices.get(&latest).is_some_and(|i| i["status"] == "open")
        {
            let charge = self.charge_for(&subscription);
            if charge == Charge::Paid
                && let Some(mut invoice) = self.invoices.get(&latest).cloned()
            {
                let amount = invoice["amount_due"].clone();
                invoice["status"] = json!("paid");
                invoice["amount_paid"] = amount;
                invoice["amount_remaining"] = json!(0);
                invoice["attempt_count"] = json!(invoice["attempt_count"].as_i64().unwrap_or(0) + 1);
                invoice["attempted"] = json!(true);
                invoice["next_payment_attempt"] = Value::Null;
                invoice["status_transitions"]["paid_at"] = json!(now);
                self.invoices.insert(latest.clone(), invoice.clone());
                subscription["status"] = json!("active");
                invoiced = Some((invoice, charge));
            } else if behavior == "error_if_incomplete" {
                Self::refuse_unpaid(charge)?;
            }
        }
        if subscription != before {
            self.subscriptions.insert(id.to_owned(), subscription.clone());
            let previous = objects::previous_attributes(&before, &subscription);
            self.emit("customer.subscription.updated", &subscription, Some(previous), now);
        }
        if let Some((invoice, charge)) = invoiced {
            self.emit_invoice_outcome(&invoice, charge, now);
        }
        Ok(subscription)
    }

    fn update_items(&self, subscription: &mut Value, items: &Value, now: i64) -> Result<(), Failure> {
        let Some(items) = items.as_array() else {
            return Err(invalid(Some("items"), "Invalid array"));
        };
        let sub_id = subscription["id"].as_str().unwrap_or_default().to_owned();
        let mut current = subscription["items"]["data"].as_array().cloned().unwrap_or_default();
        let period = (
            current
                .first()
                .and_then(|i| i["current_period_start"].as_i64())
                .unwrap_or(now),
            current
                .first()
                .and_then(|i| i["current_period_end"].as_i64())
                .unwrap_or(now),
        );
        for (index, change) in items.iter().enumerate() {
            let p = Params::new(change, &["id", "price", "quantity", "deleted", "metadata"]).map_err(|f| {
                invalid(
                    Some(&format!("items[{index}]")),
                    f.body["error"]["message"].as_str().unwrap_or("").to_owned(),
                )
            })?;
            let price_param = format!("items[{index}][price]");
            match p.string("id")? {
                Some(item_id) => {
                    let position = current.iter().position(|i| i["id"] == item_id).ok_or_else(|| {
                        invalid(
                            Some(&format!("items[{index}][id]")),
                            format!("Subscription item {item_id} does not belong to this subscription"),
                        )
                    })?;
                    if p.boolean("deleted")? == Some(true) {
                        current.remove(position);
                        continue;
                    }
                    if let Some(price_id) = p.string("price")? {
                        let price = self.recurring_price(price_id, &price_param)?;
                        current[position]["plan"] = objects::plan_of(&price);
                        current[position]["price"] = price;
                    }
                    if let Some(quantity) = p.integer("quantity")? {
                        current[position]["quantity"] = Value::from(quantity.max(0));
                    }
                    if let Some(metadata) = p.metadata(&current[position]["metadata"])? {
                        current[position]["metadata"] = metadata;
                    }
                }
                None => {
                    let price_id = p
                        .required("price")
                        .map_err(|_| invalid(Some(&price_param), format!("Missing required param: {price_param}.")))?;
                    let price = self.recurring_price(price_id, &price_param)?;
                    current.push(objects::subscription_item(
                        &short_id("si"),
                        &sub_id,
                        &price,
                        now,
                        period,
                    ));
                }
            }
        }
        if current.is_empty() {
            return Err(invalid(
                Some("items"),
                "A subscription must have at least one active plan.",
            ));
        }
        let interval = &current[0]["price"]["recurring"]["interval"];
        if current.iter().any(|i| &i["price"]["recurring"]["interval"] != interval) {
            return Err(invalid(
                Some("items"),
                "Currency and interval fields must match across all plans on this subscription.",
            ));
        }
        subscription["items"]["total_count"] = Value::from(current.len());
        subscription["items"]["data"] = Value::Array(current);
        Ok(())
    }

    pub fn cancel_subscription(&mut self, id: &str, params: &Value, now: i64) -> Outcome {
        Params::new(params, &["invoice_now", "prorate", "expand"])?;
        let before = self
            .subscriptions
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("subscription", id, None))?;
        if before["status"] == "canceled" {
            return Err(invalid(
                None,
                format!("This subscription has already been canceled: {id}"),
            ));
        }
        let mut subscription = before.clone();
        subscription["status"] = Value::from("canceled");
        subscription["canceled_at"] = Value::from(now);
        subscription["ended_at"] = Value::from(now);
        subscription["cancellation_details"]["reason"] = Value::from("cancellation_requested");
        self.subscriptions.insert(id.to_owned(), subscription.clone());
        self.emit("customer.subscription.deleted", &subscription, None, now);
        Ok(subscription)
    }

    /// A renewal of a subscription that is not trialing or canceled, now, as a test clock
    /// reaching the period's end makes it (see `cycle`), but paid or failing as `pays` says
    /// whatever its card. Returns the events.
    pub fn renewal(&mut self, id: &str, pays: bool, now: i64) -> Option<Vec<Value>> {
        self.subscriptions.get(id).filter(|s| {
            !matches!(
                s["status"].as_str(),
                Some("trialing" | "canceled" | "incomplete" | "incomplete_expired")
            )
        })?;
        self.request = (
            format!("req_{}", &uuid::Uuid::new_v4().simple().to_string()[..14]),
            None,
        );
        let first = self.emitted.len();
        self.cycle(id, now, Some(if pays { Charge::Paid } else { Charge::Failed }))?;
        Some(self.emitted.drain(first..).collect())
    }

    /// Stripe's notice three days before a trial ends, for a trialing subscription.
    pub fn trial_will_end(&mut self, id: &str, now: i64) -> Option<Value> {
        let subscription = self
            .subscriptions
            .get(id)
            .filter(|s| s["status"] == "trialing")?
            .clone();
        self.request = (
            format!("req_{}", &uuid::Uuid::new_v4().simple().to_string()[..14]),
            None,
        );
        self.emit("customer.subscription.trial_will_end", &subscription, None, now);
        self.emitted.pop()
    }

    // Events

    pub fn retrieve_event(&self, id: &str, params: &Value) -> Outcome {
        Params::new(params, &["expand"])?;
        self.events
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
            .ok_or_else(|| no_such("event", id, None))
    }

    pub fn list_events(&self, params: &Value) -> Outcome {
        let p = Params::new(params, &["type", "limit", "starting_after", "expand"])?;
        let kind = p.string("type")?;
        let limit = limit(&p)?;
        let after = p.string("starting_after")?;
        let mut newest_first: Vec<&Value> = self
            .events
            .iter()
            .rev()
            .filter(|e| kind.is_none_or(|k| e["type"] == k))
            .collect();
        if let Some(after) = after {
            let position = newest_first.iter().position(|e| e["id"] == after).map_or(0, |p| p + 1);
            newest_first.drain(..position);
        }
        let has_more = newest_first.len() > limit;
        newest_first.truncate(limit);
        Ok(json!({"object": "list", "data": newest_first, "has_more": has_more, "url": "/v1/events"}))
    }

    /// A page of a list, newest first, of the objects `select` returns for known ids.
    fn list<'s>(&'s self, url: &str, p: &Params<'_>, select: impl Fn(&str) -> Option<&'s Value>) -> Outcome {
        let limit = limit(p)?;
        let after = p.string("starting_after")?;
        let mut ids: Vec<&String> = self.order.iter().rev().collect();
        if let Some(after) = after {
            let position = ids.iter().position(|id| *id == after).map_or(0, |p| p + 1);
            ids.drain(..position);
        }
        let mut data: Vec<Value> = Vec::new();
        let mut has_more = false;
        for id in ids {
            if let Some(object) = select(id) {
                if data.len() == limit {
                    has_more = true;
                    break;
                }
                data.push(object.clone());
            }
        }
        Ok(json!({"object": "list", "data": data, "has_more": has_more, "url": url}))
    }
}

fn limit(p: &Params<'_>) -> Result<usize, Failure> {
    match p.integer("limit")? {
        None => Ok(10),
        Some(n) if (1..=100).contains(&n) => Ok(n as usize),
        Some(_) => Err(invalid(Some("limit"), "Invalid limit: must be between 1 and 100")),
    }
}
