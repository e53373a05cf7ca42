//! The signup queue's consumer. Each `profile.created` event becomes the user's subscription
//! on the `pending` plan, its trial counted from the profile's creation (see
//! `billing::provisioning`). Messages are handled independently and concurrently; the answer is
//! a partial batch response naming only the messages to deliver again:
//!
//! - stored, or already stored (a redelivery or a duplicate event), or another event type:
//!   acknowledged;
//! - poison (not JSON, wrong fields, bad UUID): reported, so that after the queue's
//!   `maxReceiveCount` it moves to the dead-letter queue; it never holds back the others;
//! - a transient failure (Stripe or DynamoDB unavailable): reported, so SQS retries it alone.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use billing::access::{Operation, declared_store};
use billing::clock::SharedClock;
use billing::config::{ConfigError, Environment, billing_table, plan_catalog};
use billing::deadline;
use billing::provisioning::{Provision, ProvisionError, provision};
use billing::signup::{self, ProfileCreated, SignupMessage};
use billing::store::Store;
use billing::stripe::Billing;
use billing::subscription::{PlanCatalog, SubscriptionChange};
use billing_adapters::DynamoStore;
use billing_adapters::StripeBilling;
use futures_util::future::join_all;
use std::time::SystemTime;
use tracing::Instrument;

/// The name refusals of undeclared operations give.
pub const FUNCTION: &str = "signup-listener";

/// What this function does with the store; its IAM policy grants exactly these.
pub const OPERATIONS: &[Operation] = &[
    Operation::GetSubscription,
    Operation::CreateSubscription,
    Operation::ReadSecrets,
];

pub const ACTOR: &str = "system:signup";

/// What became of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    AlreadyExists,
    Ignored,
    Poison(String),
    Retry(String),
}

impl Outcome {
    /// The outcome's label in the [`billing::metrics::SIGNUPS`] count.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::AlreadyExists => "already_exists",
            Outcome::Ignored => "ignored",
            Outcome::Poison(_) => "poison",
            Outcome::Retry(_) => "retry",
        }
    }

    pub fn acknowledged(&self) -> bool {
        matches!(self, Outcome::Created | Outcome::AlreadyExists | Outcome::Ignored)
    }
}

pub struct SignupListener {
    pub store: Arc<dyn Store>,
    pub billing: Arc<dyn Billing>,
    pub catalog: PlanCatalog,
    /// What time it is.
    pub clock: SharedClock,
}

impl SignupListener {
    /// Reads `BILLING_TABLE`, `STRIPE_SECRET_KEY` (and `STRIPE_API_BASE`) and the plan prices;
    /// builds the clients once.
    pub async fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let table = billing_table(env)?;
        let billing = StripeBilling::from_env(env)?;
        Ok(SignupListener {
            store: Arc::new(DynamoStore::connect(table).await),
            billing: Arc::new(billing),
            catalog: plan_catalog(env)?,
            clock: Arc::new(billing_adapters::SystemClock),
        }
        .declared())
    }

    /// The same function, its ports restricted to [`OPERATIONS`].
    pub fn declared(self) -> Self {
        SignupListener {
            store: declared_store(self.store, FUNCTION, OPERATIONS),
            ..self
        }
    }

    /// Handles a batch; the response names the messages SQS should deliver again.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        self.handle_within(event, None).await
    }

    /// [`SignupListener::handle`] before the invocation's `deadline`: Stripe's retries stop in
    /// time, and a message still unfinished just before the deadline is reported as a failure
    /// of the batch (SQS delivers it again; its provisioning is idempotent), so the finished
    /// ones are acknowledged instead of the whole batch failing with the invocation.
    pub async fn handle_within(&self, event: SqsEvent, deadline: Option<SystemTime>) -> SqsBatchResponse {
        let outcomes = join_all(event.records.iter().map(|message| async move {
            match deadline {
                None => self.handle_message(message).await,
                Some(at) => {
                    let guard = deadline::until_deadline(at).saturating_sub(deadline::ANSWER_MARGIN / 2);
                    let work = deadline::within(Some(at), self.handle_message(message));
                    tokio::time::timeout(guard, work).await.unwrap_or_else(|_| {
                        tracing::warn!(
                            message_id = message.message_id.as_deref().unwrap_or(""),
                            "unfinished at the deadline; SQS will deliver it again"
                        );
                        Outcome::Retry("unfinished at the invocation's deadline".into())
                    })
                }
            }
        }))
        .await;
        let mut response = SqsBatchResponse::default();
        for (message, outcome) in event.records.iter().zip(outcomes) {
            if !outcome.acknowledged() {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message.message_id.clone().unwrap_or_default();
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    pub async fn handle_message(&self, message: &SqsMessage) -> Outcome {
        let message_id = message.message_id.as_deref().unwrap_or("");
        let receive_count = message
            .attributes
            .get("ApproximateReceiveCount")
            .map_or("", String::as_str);
        let span = tracing::info_span!("signup", message_id, receive_count);
        async move {
            let outcome = match signup::parse(message.body.as_deref().unwrap_or("")) {
                Ok(SignupMessage::ProfileCreated(profile)) => self.provision(&profile).await,
                Ok(SignupMessage::Other(kind)) => {
                    tracing::info!(kind, "not a signup; acknowledged");
                    Outcome::Ignored
                }
                Err(poison) => Outcome::Poison(poison.0),
            };
            match &outcome {
                Outcome::Poison(reason) => {
                    tracing::error!(reason, "poison message; it will reach the dead-letter queue")
                }
                Outcome::Retry(reason) => tracing::warn!(reason, "transient failure; SQS will deliver it again"),
                other => tracing::info!(outcome = ?other, "handled"),
            }
            billing::metrics::signup(outcome.label());
            outcome
        }
        .instrument(span)
        .await
    }

    async fn provision(&self, profile: &ProfileCreated) -> Outcome {
        let change = SubscriptionChange {
            user_id: Some(profile.user_id),
            email: Some(profile.email.clone()),
            ..SubscriptionChange::default()
        };
        let Some(plan) = self.catalog.get(PlanCatalog::PENDING) else {
            return Outcome::Retry("the plan catalog has no pending plan".into());
        };
        let now = self.clock.now();
        let request = Provision {
            change: &change,
            plan,
            trial_start: Some(profile.trial_start(now)),
            actor: ACTOR,
            now,
        };
        match provision(self.store.as_ref(), self.billing.as_ref(), request).await {
            Ok(_) => Outcome::Created,
            Err(ProvisionError::AlreadyExists) => Outcome::AlreadyExists,
            Err(other) => Outcome::Retry(other.to_string()),
        }
    }
}
