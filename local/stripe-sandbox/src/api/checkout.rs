//! Checkout Sessions in `mode=setup`: Stripe's hosted page that saves a card for a customer.
//!
//! The session's `url` is a page of the sandbox with one form; posting it with a test payment
//! method (`pm_card_visa`, any id `attach` takes) attaches the card to the customer, completes
//! the session's SetupIntent, sends `checkout.session.completed`, and sends the browser to the
//! session's `success_url` (with `{CHECKOUT_SESSION_ID}` replaced, as Stripe does). A card that
//! declines on attach leaves the session open and the page says why. As on Stripe, completing
//! the session does not make the card the customer's default: the consumer does that.

use serde_json::{Value, json};

use super::{Failure, Outcome, Params, State, invalid, no_such, not_implemented, ordered_id};
use crate::objects::{self, NewCheckoutSession};

/// Where the browser goes after a completed page.
pub enum Completed {
    /// 303 to this URL.
    Redirect(String),
}

impl State {
    pub fn create_checkout_session(&mut self, params: &Value, now: i64) -> Outcome {
        let p = Params::new(
            params,
            &[
                "mode",
                "customer",
                "currency",
                "success_url",
                "cancel_url",
                "payment_method_types",
                "metadata",
                "expand",
            ],
        )?;
        match p.required("mode")? {
            "setup" => {}
            "payment" | "subscription" => return Err(not_implemented("Checkout Sessions in modes other than setup")),
            other => return Err(invalid(Some("mode"), format!("Invalid mode: {other}"))),
        }
        let customer = p.required("customer")?;
        let email = self.live_customer(customer, Some("customer"))?["email"]
            .as_str()
            .map(str::to_owned);
        let success_url = p.required("success_url")?;
        let cancel_url = p.string("cancel_url")?;
        for (name, url) in [("success_url", Some(success_url)), ("cancel_url", cancel_url)] {
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(invalid(Some(name), "Not a valid URL"));
            }
        }
        if let Some(types) = params.get("payment_method_types")
            && types.as_array().is_none_or(|t| t.iter().any(|t| t != "card"))
        {
            return Err(not_implemented("payment methods other than card"));
        }
        let intent_id = ordered_id("seti");
        let intent = objects::setup_intent(&intent_id, customer, "off_session", now);
        self.setup_intents.insert(intent_id.clone(), intent);
        let id = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
        let session = objects::checkout_session(NewCheckoutSession {
            id: &id,
            customer,
            customer_email: email.as_deref(),
            setup_intent: &intent_id,
            success_url,
            cancel_url,
            metadata: p.metadata(&json!({}))?.unwrap_or_else(|| json!({})),
            url: format!("{}/checkout/{id}", self.public_base),
            created: now,
        });
        self.checkout_sessions.insert(id.clone(), session.clone());
        self.remember(&id);
        Ok(session)
    }

    pub fn retrieve_checkout_session(&self, id: &str, params: &Value) -> Outcome {
        Params::new(params, &["expand"])?;
        self.checkout_sessions
            .get(id)
            .cloned()
            .ok_or_else(|| no_such("checkout.session", id, None))
    }

    /// The session a Checkout page shows, if it is open.
    pub fn open_checkout_session(&self, id: &str, now: i64) -> Result<Value, String> {
        let session = self
            .checkout_sessions
            .get(id)
            .ok_or_else(|| "This Checkout page does not exist.".to_owned())?;
        match session["status"].as_str() {
            Some("open") if session["expires_at"].as_i64().is_some_and(|t| t > now) => Ok(session.clone()),
            Some("complete") => Err("This Checkout Session is already complete.".to_owned()),
            _ => Err("This Checkout Session has expired.".to_owned()),
        }
    }

    /// The Checkout page's form posted with `payment_method`.
    pub fn complete_checkout_session(&mut self, id: &str, payment_method: &str, now: i64) -> Result<Completed, String> {
        let mut session = self.open_checkout_session(id, now)?;
        let customer = session["customer"].as_str().unwrap_or_default().to_owned();
        let method = self
            .attach_payment_method(payment_method, &json!({"customer": customer}), now)
            .map_err(|failure: Failure| {
                failure.body["error"]["message"]
                    .as_str()
                    .unwrap_or("The card could not be saved.")
                    .to_owned()
            })?;
        let method_id = method["id"].as_str().unwrap_or_default().to_owned();
        let intent_id = session["setup_intent"].as_str().unwrap_or_default().to_owned();
        if let Some(intent) = self.setup_intents.get_mut(&intent_id) {
            intent["payment_method"] = Value::from(method_id);
            intent["status"] = Value::from("succeeded");
            let intent = intent.clone();
            self.emit("setup_intent.succeeded", &intent, None, now);
        }
        session["status"] = Value::from("complete");
        self.checkout_sessions.insert(id.to_owned(), session.clone());
        self.emit("checkout.session.completed", &session, None, now);
        let success = session["success_url"]
            .as_str()
            .unwrap_or_default()
            .replace("{CHECKOUT_SESSION_ID}", id);
        Ok(Completed::Redirect(success))
    }
}
