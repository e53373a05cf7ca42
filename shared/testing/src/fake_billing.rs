//! `FakeBilling`: the `Billing` port in memory, for the use cases' unit tests. It keeps what
//! Stripe keeps for the calls the service makes (customers, subscriptions, invoices with their
//! metadata and lines), answers a repeated idempotency key with the first answer, declines
//! invoices of customers whose default card is `pm_card_chargeDeclined`, and can be told to
//! fail its next call, or its next call of one operation. The handler and end-to-end tests,
//! and the fault matrices of the money paths, use the Stripe sandbox over HTTP instead.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use billing::stripe::{
    Billing, BillingError, CheckoutSession, Customer, HeldInvoice, InvoicePage, InvoicePreview, InvoiceStatus,
    SavedCard, SetupCheckout, SetupIntent, StripeSubscription, SubscriptionTerms,
};
use billing::subscription::Status;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Stripe in memory.
#[derive(Debug)]
pub struct FakeBilling {
    now: DateTime<Utc>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    customers: Vec<Customer>,
    subscriptions: HashMap<String, StripeSubscription>,
    default_payment_methods: HashMap<String, String>,
    /// Subscription → its discount in percent.
    discounts: HashMap<String, u32>,
    /// Idempotency key → the id the first call made.
    answered: HashMap<String, String>,
    calls: Vec<String>,
    fail_next: Option<BillingError>,
    /// The next call of this operation fails with this error, changing nothing.
    fail_operation: Option<(String, BillingError)>,
    invoices: Vec<FakeInvoice>,
    next_id: u64,
}

/// An invoice as the fake keeps it.
#[derive(Clone, Debug)]
pub struct FakeInvoice {
    /// `in_...`.
    pub id: String,
    /// Whose.
    pub customer: String,
    /// Its `billing_reference` metadata.
    pub reference: String,
    /// Where it is.
    pub status: InvoiceStatus,
    /// Its lines: key and amount.
    pub lines: Vec<(String, i64)>,
}

impl FakeInvoice {
    fn held(&self) -> HeldInvoice {
        HeldInvoice {
            id: self.id.clone(),
            status: self.status,
            amount_due: self.lines.iter().map(|(_, amount)| amount).sum(),
            lines: self.lines.iter().map(|(key, _)| key.clone()).collect(),
        }
    }
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_fake{}", self.next_id)
    }

    fn call(&mut self, operation: &str) -> Result<(), BillingError> {
        self.calls.push(operation.to_owned());
        if self
            .fail_operation
            .as_ref()
            .is_some_and(|(failing, _)| failing == operation)
        {
            return Err(self.fail_operation.take().expect("checked").1);
        }
        match self.fail_next.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn invoice(&mut self, id: &str) -> Result<&mut FakeInvoice, BillingError> {
        self.invoices
            .iter_mut()
            .find(|invoice| invoice.id == id)
            .ok_or_else(|| BillingError::Rejected(format!("no such invoice: {id}")))
    }

    /// The id the first call under `key` made, or a new one remembered under it.
    fn keyed(&mut self, key: &str, prefix: &str) -> (String, bool) {
        if let Some(id) = self.answered.get(key) {
            return (id.clone(), true);
        }
        let id = self.id(prefix);
        self.answered.insert(key.to_owned(), id.clone());
        (id, false)
    }

    fn subscription(&mut self, id: &str) -> Result<&mut StripeSubscription, BillingError> {
        self.subscriptions
            .get_mut(id)
            .ok_or_else(|| BillingError::Rejected(format!("no such subscription: {id}")))
    }

    /// A subscription an update may change: as Stripe, a canceled one is refused.
    fn updatable(&mut self, id: &str) -> Result<&mut StripeSubscription, BillingError> {
        let found = self.subscription(id)?;
        if found.status == Status::Canceled {
            return Err(BillingError::Rejected(
                "400 invalid_request_error: A canceled subscription can only update its cancellation_details and metadata."
                    .into(),
            ));
        }
        Ok(found)
    }
}

impl FakeBilling {
    /// An empty Stripe account whose objects are created at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        FakeBilling {
            now,
            state: Mutex::new(State::default()),
        }
    }

    /// Makes the next call fail with `error`, changing nothing.
    pub fn fail_next(&self, error: BillingError) {
        self.lock().fail_next = Some(error);
    }

    /// Makes the next call of `operation` (`pay_invoice`, `add_invoice_line`...) fail with
    /// `error`, changing nothing.
    pub fn fail_next_call_of(&self, operation: &str, error: BillingError) {
        self.lock().fail_operation = Some((operation.to_owned(), error));
    }

    /// Makes `payment_method` the customer's default card (`pm_card_chargeDeclined` declines).
    pub fn set_default_card(&self, customer: &str, payment_method: &str) {
        self.lock()
            .default_payment_methods
            .insert(customer.to_owned(), payment_method.to_owned());
    }

    /// Every invoice made, oldest first.
    pub fn invoices(&self) -> Vec<FakeInvoice> {
        self.lock().invoices.clone()
    }

    /// The operations called so far, in order (`create_customer`, `change_price`, ...).
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// How many customers exist.
    pub fn customer_count(&self) -> usize {
        self.lock().customers.len()
    }

    /// Changes a subscription as Stripe would on its own (a renewal, a failed payment), telling
    /// no one: what a lost webhook leaves behind.
    pub fn change_behind_our_back(&self, id: &str, change: impl FnOnce(&mut StripeSubscription)) {
        if let Some(subscription) = self.lock().subscriptions.get_mut(id) {
            change(subscription);
        }
    }

    /// How many subscriptions exist (canceled ones included).
    pub fn subscription_count(&self) -> usize {
        self.lock().subscriptions.len()
    }

    /// A subscription as Stripe holds it.
    pub fn subscription(&self, id: &str) -> Option<StripeSubscription> {
        self.lock().subscriptions.get(id).cloned()
    }

    /// The discount on a subscription, in percent.
    pub fn discount_percent(&self, subscription: &str) -> Option<u32> {
        self.lock().discounts.get(subscription).copied()
    }

    /// The default payment method of a customer.
    pub fn default_payment_method(&self, customer: &str) -> Option<String> {
        self.lock().default_payment_methods.get(customer).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Billing for FakeBilling {
    async fn create_customer(&self, _user_id: Uuid, _email: &str, key: &str) -> Result<Customer, BillingError> {
        let mut state = self.lock();
        state.call("create_customer")?;
        if let Some(id) = state.answered.get(key).cloned() {
            return Ok(state.customers.iter().find(|c| c.id == id).cloned().expect("answered"));
        }
        let customer = Customer {
            id: state.id("cus"),
            created: self.now,
        };
        state.answered.insert(key.to_owned(), customer.id.clone());
        state.customers.push(customer.clone());
        Ok(customer)
    }

    async fn create_subscription(
        &self,
        terms: SubscriptionTerms<'_>,
        key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let SubscriptionTerms {
            customer,
            price,
            trial_end,
            quantity,
            discount_percent,
            ..
        } = terms;
        let mut state = self.lock();
        state.call("create_subscription")?;
        if let Some(id) = state.answered.get(key).cloned() {
            return Ok(state.subscriptions[&id].clone());
        }
        let subscription = StripeSubscription {
            id: state.id("sub"),
            customer: customer.to_owned(),
            status: if trial_end.is_some() {
                Status::Trialing
            } else {
                Status::Active
            },
            item: state.id("si"),
            price: price.to_owned(),
            trial_start: trial_end.map(|_| self.now),
            trial_end,
            current_period_end: Some(trial_end.unwrap_or(self.now + chrono::Duration::days(30))),
            quantity: Some(u64::from(quantity.unwrap_or(1))),
            cancel_at_period_end: false,
            latest_invoice: None,
            discount_percent: None,
        };
        state.answered.insert(key.to_owned(), subscription.id.clone());
        if let Some(percent) = discount_percent.filter(|p| *p > 0) {
            state.discounts.insert(subscription.id.clone(), percent);
        }
        state
            .subscriptions
            .insert(subscription.id.clone(), subscription.clone());
        Ok(subscription)
    }

    async fn change_price(
        &self,
        subscription: &str,
        price: &str,
        _key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let mut state = self.lock();
        state.call("change_price")?;
        let subscription = state.updatable(subscription)?;
        subscription.price = price.to_owned();
        Ok(subscription.clone())
    }

    async fn attach_default_payment_method(
        &self,
        customer: &str,
        payment_method: &str,
        key: &str,
    ) -> Result<String, BillingError> {
        let mut state = self.lock();
        state.call("attach_default_payment_method")?;
        if payment_method == "pm_card_chargeDeclined" {
            return Err(BillingError::CardDeclined("Your card was declined.".into()));
        }
        if let Some(id) = state.answered.get(key).cloned() {
            return Ok(id);
        }
        let id = state.id("pm");
        state.answered.insert(key.to_owned(), id.clone());
        state.default_payment_methods.insert(customer.to_owned(), id.clone());
        Ok(id)
    }

    async fn set_cancel_at_period_end(
        &self,
        subscription: &str,
        cancel: bool,
        _key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let mut state = self.lock();
        state.call("set_cancel_at_period_end")?;
        let subscription = state.updatable(subscription)?;
        subscription.cancel_at_period_end = cancel;
        Ok(subscription.clone())
    }

    async fn cancel(&self, subscription: &str, key: &str) -> Result<StripeSubscription, BillingError> {
        let mut state = self.lock();
        state.call("cancel")?;
        // As Stripe: a cancel is a DELETE, which takes no idempotency key, and a canceled
        // subscription cannot be canceled again.
        let _ = key;
        let found = state.subscription(subscription)?;
        if found.status == Status::Canceled {
            return Err(BillingError::Rejected(format!(
                "400 invalid_request_error: This subscription has already been canceled: {subscription}"
            )));
        }
        found.status = Status::Canceled;
        Ok(found.clone())
    }

    async fn set_trial_end(
        &self,
        subscription: &str,
        trial_end: DateTime<Utc>,
        _key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let mut state = self.lock();
        state.call("set_trial_end")?;
        let subscription = state.updatable(subscription)?;
        subscription.trial_end = Some(trial_end);
        subscription.current_period_end = Some(trial_end);
        subscription.status = Status::Trialing;
        Ok(subscription.clone())
    }

    async fn retrieve_subscription(&self, subscription: &str) -> Result<StripeSubscription, BillingError> {
        let mut state = self.lock();
        state.call("retrieve_subscription")?;
        Ok(state.subscription(subscription)?.clone())
    }

    async fn set_quantity(
        &self,
        subscription: &str,
        quantity: u32,
        _key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let mut state = self.lock();
        state.call("set_quantity")?;
        let subscription = state.updatable(subscription)?;
        subscription.quantity = Some(u64::from(quantity));
        Ok(subscription.clone())
    }

    async fn set_email(&self, _customer: &str, _email: &str, _key: &str) -> Result<(), BillingError> {
        self.lock().call("set_email")
    }

    async fn set_discount(
        &self,
        subscription: &str,
        percent: u32,
        _key: &str,
    ) -> Result<StripeSubscription, BillingError> {
        let mut state = self.lock();
        state.call("set_discount")?;
        let answer = state.updatable(subscription)?.clone();
        if percent == 0 {
            state.discounts.remove(subscription);
        } else {
            state.discounts.insert(subscription.to_owned(), percent);
        }
        Ok(answer)
    }

    async fn create_setup_intent(&self, _customer: &str, key: &str) -> Result<SetupIntent, BillingError> {
        let mut state = self.lock();
        state.call("create_setup_intent")?;
        let id = match state.answered.get(key).cloned() {
            Some(id) => id,
            None => {
                let id = state.id("seti");
                state.answered.insert(key.to_owned(), id.clone());
                id
            }
        };
        Ok(SetupIntent {
            client_secret: format!("{id}_secret_fake"),
            id,
        })
    }

    async fn create_portal_session(
        &self,
        _customer: &str,
        _return_url: &str,
        _key: &str,
    ) -> Result<String, BillingError> {
        let mut state = self.lock();
        state.call("create_portal_session")?;
        Ok(format!("https://billing.example/{}", state.id("bps")))
    }

    async fn create_entity_customer(
        &self,
        _entity: billing::plans::Entity,
        _email: &str,
        key: &str,
    ) -> Result<Customer, BillingError> {
        self.create_customer(Uuid::nil(), "", key).await
    }

    async fn create_setup_checkout(
        &self,
        checkout: SetupCheckout<'_>,
        key: &str,
    ) -> Result<CheckoutSession, BillingError> {
        let mut state = self.lock();
        state.call("create_setup_checkout")?;
        let id = match state.answered.get(key) {
            Some(id) => id.clone(),
            None => {
                let id = state.id("cs");
                state.answered.insert(key.to_owned(), id.clone());
                id
            }
        };
        Ok(CheckoutSession {
            url: format!("https://checkout.stripe.com/c/pay/{id}#{}", checkout.pending_upgrade),
            id,
        })
    }

    async fn save_checkout_card(
        &self,
        customer: &str,
        _setup_intent: &str,
        _key: &str,
    ) -> Result<SavedCard, BillingError> {
        let mut state = self.lock();
        state.call("save_checkout_card")?;
        state
            .default_payment_methods
            .insert(customer.to_owned(), "pm_fake_visa".to_owned());
        Ok(SavedCard {
            payment_method: "pm_fake_visa".to_owned(),
            last4: Some("4242".to_owned()),
        })
    }

    async fn find_invoice(&self, customer: &str, reference: &str) -> Result<Option<HeldInvoice>, BillingError> {
        let mut state = self.lock();
        state.call("find_invoice")?;
        Ok(state
            .invoices
            .iter()
            .find(|invoice| invoice.customer == customer && invoice.reference == reference)
            .map(FakeInvoice::held))
    }

    async fn create_invoice(
        &self,
        customer: &str,
        reference: &str,
        _description: &str,
        key: &str,
    ) -> Result<HeldInvoice, BillingError> {
        let mut state = self.lock();
        state.call("create_invoice")?;
        let (id, replayed) = state.keyed(key, "in");
        if !replayed {
            state.invoices.push(FakeInvoice {
                id: id.clone(),
                customer: customer.to_owned(),
                reference: reference.to_owned(),
                status: InvoiceStatus::Draft,
                lines: Vec::new(),
            });
        }
        Ok(state.invoice(&id)?.held())
    }

    async fn retrieve_invoice(&self, invoice: &str) -> Result<HeldInvoice, BillingError> {
        let mut state = self.lock();
        state.call("retrieve_invoice")?;
        Ok(state.invoice(invoice)?.held())
    }

    async fn add_invoice_line(
        &self,
        _customer: &str,
        invoice: &str,
        item: &billing::plans::InvoiceItem,
        key: &str,
    ) -> Result<(), BillingError> {
        let mut state = self.lock();
        state.call("add_invoice_line")?;
        let (_, replayed) = state.keyed(key, "ii");
        if replayed {
            return Ok(());
        }
        let held = state.invoice(invoice)?;
        if held.status != InvoiceStatus::Draft {
            return Err(BillingError::Rejected(format!("invoice {invoice} is not a draft")));
        }
        let amount = i64::try_from(u64::from(item.quantity) * item.unit_amount).unwrap_or(i64::MAX);
        held.lines.push((item.idempotency_key.clone(), amount));
        Ok(())
    }

    async fn finalize_invoice(
        &self,
        invoice: &str,
        _auto_advance: bool,
        _key: &str,
    ) -> Result<HeldInvoice, BillingError> {
        let mut state = self.lock();
        state.call("finalize_invoice")?;
        let held = state.invoice(invoice)?;
        if held.status != InvoiceStatus::Draft {
            return Err(BillingError::Rejected(format!(
                "This invoice is already finalized: {invoice}"
            )));
        }
        held.status = if held.held().amount_due == 0 {
            InvoiceStatus::Paid
        } else {
            InvoiceStatus::Open
        };
        Ok(held.held())
    }

    async fn pay_invoice(&self, invoice: &str, _key: &str) -> Result<HeldInvoice, BillingError> {
        let mut state = self.lock();
        state.call("pay_invoice")?;
        let customer = state.invoice(invoice)?.customer.clone();
        let declined =
            state.default_payment_methods.get(&customer).map(String::as_str) == Some("pm_card_chargeDeclined");
        let held = state.invoice(invoice)?;
        if held.status != InvoiceStatus::Open {
            return Err(BillingError::Rejected(format!(
                "You can only pay open invoices: {invoice}"
            )));
        }
        if declined {
            return Err(BillingError::CardDeclined("Your card was declined.".to_owned()));
        }
        held.status = InvoiceStatus::Paid;
        Ok(held.held())
    }

    async fn void_invoice(&self, invoice: &str, _key: &str) -> Result<HeldInvoice, BillingError> {
        let mut state = self.lock();
        state.call("void_invoice")?;
        let held = state.invoice(invoice)?;
        if held.status != InvoiceStatus::Open {
            return Err(BillingError::Rejected(format!(
                "You can only void open invoices: {invoice}"
            )));
        }
        held.status = InvoiceStatus::Void;
        Ok(held.held())
    }

    /// The fake makes no invoices: every customer's list is empty.
    async fn list_invoices(
        &self,
        _customer: &str,
        _limit: u8,
        _starting_after: Option<&str>,
    ) -> Result<InvoicePage, BillingError> {
        self.lock().call("list_invoices")?;
        Ok(InvoicePage {
            invoices: Vec::new(),
            has_more: false,
        })
    }

    /// The fake makes no invoices: a preview charges nothing.
    async fn preview_change(
        &self,
        subscription: &str,
        _price: Option<&str>,
        _quantity: Option<u32>,
    ) -> Result<InvoicePreview, BillingError> {
        let mut state = self.lock();
        state.call("preview_change")?;
        state.subscription(subscription)?;
        Ok(InvoicePreview {
            amount_due: 0,
            currency: "usd".to_owned(),
            lines: Vec::new(),
        })
    }
}
