//! `DynamoStore`: the store on one DynamoDB table (see the access patterns in `billing::store`).
//!
//! Conditional writes carry the promises of the port: creates use
//! `attribute_not_exists(pk)`, updates `version = :expected`, and each goes into a
//! `TransactWriteItems` with its audit record so that both land or neither does.
//!
//! The audit record's key holds the version it records (`AUDIT#<version>`) and is written with
//! `attribute_not_exists`, so two writers producing the same version also collide on it: the
//! version condition and the audit key guard the same promise twice. The conformance suite
//! fails only when both are removed, which is intended.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::builders::PutBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    Projection, ProjectionType, Put, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use billing::store::{
    AuditEntry, Document, DocumentStore, DocumentWrite, EVENT_OUTCOMES, EventOrder, EventWrite, KeptEvent,
    KeptEventPage, Store, StoreError, SubscriptionFilter, SubscriptionPage, SubscriptionWrite, check_next_version,
    pack, unpack,
};
use billing::subscription::{Status, Subscription};

/// A global secondary index: its name and the attribute it is keyed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexDefinition {
    /// The index's name.
    pub name: &'static str,
    /// The attribute it is keyed on.
    pub partition_key: &'static str,
    /// The attribute its items are sorted by, if any.
    pub sort_key: Option<&'static str>,
}

/// The shape of the billing table. `template.yaml` declares the same table; a test compares
/// the two, and the local server and the tests create tables from this definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableDefinition {
    /// The table's partition key attribute.
    pub partition_key: &'static str,
    /// The table's sort key attribute.
    pub sort_key: &'static str,
    /// Its global secondary indexes.
    pub indexes: [IndexDefinition; 3],
    /// The attribute DynamoDB expires items by.
    pub ttl_attribute: &'static str,
}

/// The billing table, as `template.yaml` must declare it.
pub const TABLE_DEFINITION: TableDefinition = TableDefinition {
    partition_key: "pk",
    sort_key: "sk",
    indexes: [
        IndexDefinition {
            name: "by_stripe_subscription",
            partition_key: "gsi1pk",
            sort_key: None,
        },
        IndexDefinition {
            name: "by_stripe_customer",
            partition_key: "gsi2pk",
            sort_key: None,
        },
        // One index for every operators' list (overloaded: the partition says which list), so
        // a stack gains it in one update (CloudFormation adds one index per update).
        IndexDefinition {
            name: LISTINGS,
            partition_key: "gsi3pk",
            sort_key: Some("gsi3sk"),
        },
    ],
    ttl_attribute: "expires_at",
};

const STATE: &str = "STATE";
/// The name of the operators' lists index.
const LISTINGS: &str = "listings";
/// A copy of a subscription in the list of its email: `pk = SUBSCRIPTION#<uuid>`, `sk = EMAIL`.
const EMAIL_COPY: &str = "EMAIL";
/// Tries of a create cancelled by a concurrent transaction while nothing is stored yet.
const CREATE_ATTEMPTS: u32 = 3;
const ONCE: &str = "ONCE";
const STRIPE_EVENT: &str = "STRIPE_EVENT";
const STRIPE_INVOICE_EVENT: &str = "STRIPE_INVOICE_EVENT";
const STRIPE_CUSTOMER_EVENT: &str = "STRIPE_CUSTOMER_EVENT";
/// The claim of a Stripe id by one subscription: `pk = STRIPE_LINK#<id>`, `sk = LINK`, `owner`.
const STRIPE_LINK: &str = "STRIPE_LINK#";
const LINK: &str = "LINK";

/// What became of a subscription's transaction.
enum Written {
    Yes,
    /// The subscription's own condition failed (exists, or another version).
    No,
    /// A Stripe id of it is another subscription's.
    LinkTaken(&'static str),
}

fn subscription_pk(id: Uuid) -> String {
    format!("SUBSCRIPTION#{id}")
}

/// Which way a list runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    OldestFirst,
    NewestFirst,
}

/// The outcome of an event that applies again when delivered or replayed once its
/// subscription exists: its record does not count as "already handled".
const APPLIES_AGAIN: &str = "unknown_subscription";
const KEPT_EVENT_SK: &str = "EVENT";

fn kept_event_pk(id: &str) -> String {
    format!("KEPT_EVENT#{id}")
}

fn event_partition(outcome: &str) -> String {
    format!("STRIPE_EVENTS#{outcome}")
}

fn decode_kept_event(item: HashMap<String, AttributeValue>) -> Result<KeptEvent, StoreError> {
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("a kept event without its {name}")))
    };
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(|| StoreError::Corrupt(format!("a kept event without its {name}")))
    };
    let id = text("pk")?.trim_start_matches("KEPT_EVENT#").to_owned();
    let stored = item
        .get("body")
        .and_then(|v| v.as_b().ok())
        .ok_or_else(|| StoreError::Corrupt("a kept event without its body".into()))?;
    Ok(KeptEvent {
        id,
        kind: text("type")?,
        created: number("created")?,
        outcome: text("outcome")?,
        subscription_id: item
            .get("subscription_id")
            .and_then(|v| v.as_s().ok())
            .and_then(|text| text.parse().ok()),
        body: unpack(&text("body_encoding")?, stored.as_ref())?,
        kept_until: DateTime::from_timestamp(number(TABLE_DEFINITION.ttl_attribute)?, 0).unwrap_or_default(),
    })
}

/// The listings index's key attributes.
const LISTING_PK: &str = "gsi3pk";
const LISTING_SK: &str = "gsi3sk";

fn status_partition(status: Status) -> String {
    format!("SUBSCRIPTIONS#STATUS#{}", status.as_str())
}

fn email_partition(email: &str) -> String {
    format!("SUBSCRIPTIONS#EMAIL#{}", email.to_lowercase())
}

/// Orders a list by creation, then id (two subscriptions created in the same second).
fn created_key(subscription: &Subscription) -> String {
    format!(
        "{}#{}",
        subscription.created_at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
        subscription.id
    )
}

fn audit_sk(version: u64) -> String {
    format!("AUDIT#{version:020}")
}

fn stripe_subscription_key(id: &str) -> String {
    format!("STRIPE_SUBSCRIPTION#{id}")
}

fn stripe_customer_key(id: &str) -> String {
    format!("STRIPE_CUSTOMER#{id}")
}

/// The `Store` and `DocumentStore` ports on one DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// A store on `table` through `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    /// A store on `table`, with a client configured from the standard AWS environment.
    pub async fn connect(table: impl Into<String>) -> Self {
        DynamoStore::with_config(&crate::aws::load_sdk_config().await, table)
    }

    /// A store on `table` with a client of an already loaded configuration.
    pub fn with_config(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoStore::new(Client::new(config), table)
    }

    /// The DynamoDB client (for benches' raw baselines).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table as [`TABLE_DEFINITION`] describes it (on-demand billing, TTL on),
    /// unless it exists. For the local server and tests; in AWS the template creates it.
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        let exists = match self.client.describe_table().table_name(&self.table).send().await {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                false
            }
            Err(e) => return Err(sdk(e)),
        };
        if exists {
            return Ok(());
        }
        let def = TABLE_DEFINITION;
        let string_attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build)
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build)
        };
        let mut request = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attribute(def.partition_key)?)
            .attribute_definitions(string_attribute(def.sort_key)?)
            .key_schema(key(def.partition_key, KeyType::Hash)?)
            .key_schema(key(def.sort_key, KeyType::Range)?);
        for index in def.indexes {
            request = request.attribute_definitions(string_attribute(index.partition_key)?);
            let mut schema = vec![key(index.partition_key, KeyType::Hash)?];
            if let Some(sort_key) = index.sort_key {
                request = request.attribute_definitions(string_attribute(sort_key)?);
                schema.push(key(sort_key, KeyType::Range)?);
            }
            request = request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .set_key_schema(Some(schema))
                    .projection(Projection::builder().projection_type(ProjectionType::All).build())
                    .build()
                    .map_err(build)?,
            );
        }
        match request.send().await {
            Ok(_) => {}
            // Someone else (another test, another process) created it first: fine.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => return Ok(()),
            Err(e) => return Err(sdk(e)),
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(def.ttl_attribute)
                    .enabled(true)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await
            .map_err(sdk)?;
        Ok(())
    }

    fn subscription_put(&self, subscription: &Subscription) -> Result<PutBuilder, StoreError> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(subscription).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Absent optional attributes are left out, never written as NULL: some feed indexes.
        item.retain(|_, value| !matches!(value, AttributeValue::Null(_)));
        item.insert("pk".into(), s(subscription_pk(subscription.id)));
        item.insert("sk".into(), s(STATE));
        if let Some(id) = &subscription.stripe_subscription {
            item.insert(
                TABLE_DEFINITION.indexes[0].partition_key.into(),
                s(stripe_subscription_key(id)),
            );
        }
        if let Some(id) = &subscription.stripe_customer {
            item.insert(
                TABLE_DEFINITION.indexes[1].partition_key.into(),
                s(stripe_customer_key(id)),
            );
        }
        item.insert(LISTING_PK.into(), s(status_partition(subscription.status)));
        item.insert(
            LISTING_SK.into(),
            s(format!("{}#{}", subscription.plan, created_key(subscription))),
        );
        Ok(Put::builder().table_name(&self.table).set_item(Some(item)))
    }

    /// The copy of `subscription` in its email's list, written with every version of it in the
    /// same transaction (unconditionally: the subscription's own item carries the condition).
    fn email_copy_put(&self, subscription: &Subscription) -> Result<Put, StoreError> {
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(subscription).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        item.retain(|_, value| !matches!(value, AttributeValue::Null(_)));
        item.insert("pk".into(), s(subscription_pk(subscription.id)));
        item.insert("sk".into(), s(EMAIL_COPY));
        item.insert(LISTING_PK.into(), s(email_partition(&subscription.email)));
        item.insert(LISTING_SK.into(), s(created_key(subscription)));
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(build)
    }

    fn audit_put(&self, audit: &AuditEntry) -> Result<Put, StoreError> {
        let json = serde_json::to_string(audit).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Put::builder()
            .table_name(&self.table)
            .item("pk", s(subscription_pk(audit.subscription_id)))
            .item("sk", s(audit_sk(audit.version)))
            .item("audit", s(json))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build)
    }

    /// The claims of `subscription`'s Stripe ids, each a `Put` that succeeds only when the id
    /// is unclaimed or already this subscription's, with the field it guards.
    fn link_claims(&self, subscription: &Subscription) -> Result<Vec<(Put, &'static str)>, StoreError> {
        let owner = subscription.id.to_string();
        [
            ("/stripe_customer", subscription.stripe_customer.as_deref()),
            ("/stripe_subscription", subscription.stripe_subscription.as_deref()),
        ]
        .into_iter()
        .filter_map(|(field, id)| id.map(|id| (field, id)))
        .map(|(field, id)| {
            let claim = Put::builder()
                .table_name(&self.table)
                .item("pk", s(format!("{STRIPE_LINK}{id}")))
                .item("sk", s(LINK))
                .item("owner", s(owner.clone()))
                .condition_expression("attribute_not_exists(pk) OR #owner = :owner")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_values(":owner", s(owner.clone()))
                .build()
                .map_err(build)?;
            Ok((claim, field))
        })
        .collect()
    }

    /// Writes a subscription, its audit record and the claims of its Stripe ids in one
    /// transaction, the subscription's write guarded by its own condition.
    async fn write_with_audit(
        &self,
        subscription: Put,
        audit: &AuditEntry,
        next: &Subscription,
    ) -> Result<Written, StoreError> {
        let claims = self.link_claims(next)?;
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(subscription).build())
            .transact_items(TransactWriteItem::builder().put(self.audit_put(audit)?).build());
        for (claim, _) in &claims {
            request = request.transact_items(TransactWriteItem::builder().put(claim.clone()).build());
        }
        request = request.transact_items(TransactWriteItem::builder().put(self.email_copy_put(next)?).build());
        match request.send().await {
            Ok(_) => Ok(Written::Yes),
            Err(e) => {
                let failed = failed_conditions(e)?;
                let failed = |index: usize| failed.get(index).copied().unwrap_or(false);
                if let Some((_, field)) = claims.iter().enumerate().find(|(i, _)| failed(i + 2)).map(|(_, c)| c) {
                    return Ok(Written::LinkTaken(field));
                }
                Ok(Written::No)
            }
        }
    }

    async fn get_item(&self, id: Uuid) -> Result<Option<Subscription>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(subscription_pk(id)))
            .key("sk", s(STATE))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk)?;
        output.item.map(decode).transpose()
    }

    async fn find_by_index(&self, index: usize, key: String) -> Result<Subscription, StoreError> {
        let definition = TABLE_DEFINITION.indexes[index];
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(definition.name)
            .key_condition_expression("#k = :k")
            .expression_attribute_names("#k", definition.partition_key)
            .expression_attribute_values(":k", s(key))
            .limit(1)
            .send()
            .await
            .map_err(sdk)?;
        let item = output
            .items
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or(StoreError::NotFound)?;
        decode(item)
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn create_subscription(&self, subscription: &Subscription, audit: &AuditEntry) -> Result<(), StoreError> {
        // A transaction is cancelled by the item existing, or (in DynamoDB, not in moto) by a
        // concurrent transaction on it still in flight. Only a stored item means "already
        // exists"; a conflict with nothing stored yet is tried again.
        for attempt in 0..CREATE_ATTEMPTS {
            let put = self
                .subscription_put(subscription)?
                .condition_expression("attribute_not_exists(pk)");
            match self
                .write_with_audit(put.build().map_err(build)?, audit, subscription)
                .await?
            {
                Written::Yes => return Ok(()),
                Written::LinkTaken(field) => return Err(StoreError::LinkTaken(field)),
                Written::No => {}
            }
            if self.get_item(subscription.id).await?.is_some() {
                return Err(StoreError::AlreadyExists);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
        }
        Err(StoreError::unavailable(
            "create kept conflicting with concurrent transactions",
        ))
    }

    async fn get_subscription(&self, id: Uuid) -> Result<Subscription, StoreError> {
        self.get_item(id).await?.ok_or(StoreError::NotFound)
    }

    async fn update_subscription(
        &self,
        next: &Subscription,
        expected_version: u64,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        check_next_version(next, expected_version, audit)?;
        let put = self
            .subscription_put(next)?
            .condition_expression("attribute_exists(pk) AND version = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(expected_version.to_string()));
        match self.write_with_audit(put.build().map_err(build)?, audit, next).await? {
            Written::Yes => return Ok(()),
            Written::LinkTaken(field) => return Err(StoreError::LinkTaken(field)),
            Written::No => {}
        }
        match self.get_item(next.id).await? {
            None => Err(StoreError::NotFound),
            Some(_) => Err(StoreError::VersionConflict),
        }
    }

    async fn find_by_stripe_subscription(&self, stripe_subscription: &str) -> Result<Subscription, StoreError> {
        self.find_by_index(0, stripe_subscription_key(stripe_subscription))
            .await
    }

    async fn find_by_stripe_customer(&self, stripe_customer: &str) -> Result<Subscription, StoreError> {
        self.find_by_index(1, stripe_customer_key(stripe_customer)).await
    }

    async fn audit_page(&self, id: Uuid, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = Vec::new();
        let mut start = None;
        while entries.len() < limit {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(subscription_pk(id)))
                .expression_attribute_values(":from", s(audit_sk(after.saturating_add(1))))
                .expression_attribute_values(":to", s(audit_sk(u64::MAX)))
                .limit(i32::try_from(limit - entries.len()).unwrap_or(i32::MAX))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk)?;
            for item in output.items.unwrap_or_default() {
                let json = item
                    .get("audit")
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| StoreError::Corrupt("audit item without its record".into()))?;
                entries.push(serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(entries)
    }

    async fn list_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        limit: usize,
        cursor: Option<&serde_json::Value>,
    ) -> Result<SubscriptionPage, StoreError> {
        // The partitions to read, in order: one email's copies (status and plan filtered on
        // them: an email has few), or each status asked for (the plan a prefix of the sort key).
        let (partitions, prefix): (Vec<String>, Option<String>) = match &filter.email {
            Some(email) => (vec![email_partition(email)], None),
            None => (
                filter
                    .status
                    .map_or(Status::ALL.to_vec(), |status| vec![status])
                    .into_iter()
                    .map(status_partition)
                    .collect(),
                filter.plan.as_ref().map(|plan| format!("{plan}#")),
            ),
        };
        let status = filter.status.filter(|_| filter.email.is_some());
        let plan = filter.plan.clone().filter(|_| filter.email.is_some());
        let (items, next) = self
            .walk_listing(
                &partitions,
                prefix.as_deref(),
                Order::OldestFirst,
                limit,
                cursor,
                move |mut query| {
                    // An email's copies are few: its status and plan filters apply as they are read.
                    let mut conditions = Vec::new();
                    if let Some(status) = status {
                        conditions.push("#status = :status");
                        query = query
                            .expression_attribute_names("#status", "status")
                            .expression_attribute_values(":status", s(status.as_str()));
                    }
                    if let Some(plan) = &plan {
                        conditions.push("#plan = :plan");
                        query = query
                            .expression_attribute_names("#plan", "plan")
                            .expression_attribute_values(":plan", s(plan.clone()));
                    }
                    if conditions.is_empty() {
                        query
                    } else {
                        query.filter_expression(conditions.join(" AND "))
                    }
                },
            )
            .await?;
        let subscriptions = items.into_iter().map(decode).collect::<Result<_, _>>()?;
        Ok(SubscriptionPage { subscriptions, next })
    }

    async fn record_event(
        &self,
        key: &str,
        expires_at: DateTime<Utc>,
        outcome: &str,
        write: Option<SubscriptionWrite<'_>>,
    ) -> Result<EventWrite, StoreError> {
        let now = Utc::now().timestamp().to_string();
        // TTL deletion runs late (up to days), so an expired record still present counts as
        // absent: the condition compares its expiry with now.
        let mut once = Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("ONCE#{key}")))
            .item("sk", s(ONCE))
            .item(
                TABLE_DEFINITION.ttl_attribute,
                AttributeValue::N(expires_at.timestamp().to_string()),
            )
            .condition_expression("attribute_not_exists(pk) OR #expires <= :now OR #outcome = :again")
            .expression_attribute_names("#expires", TABLE_DEFINITION.ttl_attribute)
            .expression_attribute_names("#outcome", "outcome")
            .expression_attribute_values(":now", AttributeValue::N(now))
            .expression_attribute_values(":again", s(APPLIES_AGAIN));
        if !outcome.is_empty() {
            once = once.item("outcome", s(outcome));
        }
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(once.build().map_err(build)?).build());
        // The index of the subscription's own item in the transaction: what failed tells
        // duplicate (0), stale (a mark) and version conflict (the subscription) apart.
        let mut subscription_item = 2;
        if let Some(write) = &write {
            write.check()?;
            const NEWER: &str =
                "attribute_not_exists(pk) OR created < :created OR (created = :created AND event_id < :event)";
            let created = AttributeValue::N(write.mark.created.to_string());
            let event = s(write.mark.id.clone());
            let mark_sk = match write.order {
                EventOrder::Snapshot => STRIPE_EVENT,
                EventOrder::Invoice => STRIPE_INVOICE_EVENT,
                EventOrder::Customer => STRIPE_CUSTOMER_EVENT,
            };
            let mark = Put::builder()
                .table_name(&self.table)
                .item("pk", s(subscription_pk(write.next.id)))
                .item("sk", s(mark_sk))
                .item("created", created.clone())
                .item("event_id", event.clone())
                .condition_expression(NEWER)
                .expression_attribute_values(":created", created.clone())
                .expression_attribute_values(":event", event.clone())
                .build()
                .map_err(build)?;
            request = request.transact_items(TransactWriteItem::builder().put(mark).build());
            if write.order == EventOrder::Invoice {
                // An invoice event never rolls back a newer snapshot.
                let after_snapshots = ConditionCheck::builder()
                    .table_name(&self.table)
                    .key("pk", s(subscription_pk(write.next.id)))
                    .key("sk", s(STRIPE_EVENT))
                    .condition_expression(NEWER)
                    .expression_attribute_values(":created", created)
                    .expression_attribute_values(":event", event)
                    .build()
                    .map_err(build)?;
                request = request.transact_items(TransactWriteItem::builder().condition_check(after_snapshots).build());
                subscription_item = 3;
            }
            request = if write.changes_subscription() {
                let subscription = self
                    .subscription_put(write.next)?
                    .condition_expression("attribute_exists(pk) AND version = :expected")
                    .expression_attribute_values(":expected", AttributeValue::N(write.expected_version.to_string()))
                    .build()
                    .map_err(build)?;
                request
                    .transact_items(TransactWriteItem::builder().put(subscription).build())
                    .transact_items(TransactWriteItem::builder().put(self.audit_put(write.audit)?).build())
                    .transact_items(
                        TransactWriteItem::builder()
                            .put(self.email_copy_put(write.next)?)
                            .build(),
                    )
            } else {
                let unchanged = ConditionCheck::builder()
                    .table_name(&self.table)
                    .key("pk", s(subscription_pk(write.next.id)))
                    .key("sk", s(STATE))
                    .condition_expression("attribute_exists(pk) AND version = :expected")
                    .expression_attribute_values(":expected", AttributeValue::N(write.expected_version.to_string()))
                    .build()
                    .map_err(build)?;
                request.transact_items(TransactWriteItem::builder().condition_check(unchanged).build())
            };
        }
        match request.send().await {
            Ok(_) => Ok(EventWrite::Recorded),
            Err(e) => {
                let reasons = failed_conditions(e)?;
                let failed = |index: usize| reasons.get(index).copied().unwrap_or(false);
                if failed(0) {
                    Ok(EventWrite::Duplicate)
                } else if (1..subscription_item).any(failed) {
                    Ok(EventWrite::Stale)
                } else if failed(subscription_item) {
                    Ok(EventWrite::VersionConflict)
                } else {
                    // Cancelled for another reason (a conflicting transaction in flight): nothing
                    // was written, and the event is delivered again.
                    Err(StoreError::unavailable(format!(
                        "event write cancelled without a failed condition: {reasons:?}"
                    )))
                }
            }
        }
    }

    async fn is_recorded(&self, key: &str) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("ONCE#{key}")))
            .key("sk", s(ONCE))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk)?;
        let now = Utc::now().timestamp();
        Ok(output
            .item
            .filter(|item| item.get("outcome").and_then(|v| v.as_s().ok()).map(String::as_str) != Some(APPLIES_AGAIN))
            .and_then(|item| {
                item.get(TABLE_DEFINITION.ttl_attribute)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse::<i64>().ok())
            })
            .is_some_and(|expiry| expiry > now))
    }

    async fn keep_event(&self, event: &KeptEvent, replace: bool) -> Result<(), StoreError> {
        let (encoding, body) = pack(&event.body);
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(kept_event_pk(&event.id)))
            .item("sk", s(KEPT_EVENT_SK))
            .item("type", s(event.kind.clone()))
            .item("created", AttributeValue::N(event.created.to_string()))
            .item("outcome", s(event.outcome.clone()))
            .item("body", AttributeValue::B(Blob::new(body)))
            .item("body_encoding", s(encoding))
            .item(
                TABLE_DEFINITION.ttl_attribute,
                AttributeValue::N(event.kept_until.timestamp().to_string()),
            )
            .item(LISTING_PK, s(event_partition(&event.outcome)))
            .item(LISTING_SK, s(format!("{:012}#{}", event.created.max(0), event.id)));
        if let Some(subscription) = event.subscription_id {
            put = put.item("subscription_id", s(subscription.to_string()));
        }
        if !replace {
            put = put.condition_expression("attribute_not_exists(pk)");
        }
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if !replace
                    && e.as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk(e)),
        }
    }

    async fn kept_event(&self, id: &str) -> Result<KeptEvent, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(kept_event_pk(id)))
            .key("sk", s(KEPT_EVENT_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk)?;
        decode_kept_event(output.item.ok_or(StoreError::NotFound)?)
    }

    async fn list_kept_events(
        &self,
        outcome: Option<&str>,
        limit: usize,
        cursor: Option<&serde_json::Value>,
    ) -> Result<KeptEventPage, StoreError> {
        let partitions: Vec<String> = match outcome {
            Some(outcome) => vec![event_partition(outcome)],
            None => EVENT_OUTCOMES.iter().map(|outcome| event_partition(outcome)).collect(),
        };
        let (items, next) = self
            .walk_listing(&partitions, None, Order::NewestFirst, limit, cursor, |query| query)
            .await?;
        let events = items.into_iter().map(decode_kept_event).collect::<Result<_, _>>()?;
        Ok(KeptEventPage { events, next })
    }
}

/// Where a list's cursor says to go on: a partition among `partitions` and the key of the last
/// item read in it (none: from its start). The key must lie in that partition, so a cursor never
/// reads outside the list it was given for.
fn listing_position(
    cursor: &serde_json::Value,
    partitions: &[String],
) -> Result<(usize, Option<HashMap<String, AttributeValue>>), StoreError> {
    let partition = cursor["partition"]
        .as_u64()
        .and_then(|p| usize::try_from(p).ok())
        .filter(|p| *p < partitions.len())
        .ok_or(StoreError::InvalidCursor)?;
    let key = cursor["key"].as_object().ok_or(StoreError::InvalidCursor)?;
    if key.is_empty() {
        return Ok((partition, None));
    }
    let expected = ["pk", "sk", LISTING_PK, LISTING_SK];
    if key.len() != expected.len() || key[LISTING_PK].as_str() != Some(partitions[partition].as_str()) {
        return Err(StoreError::InvalidCursor);
    }
    let start = expected
        .iter()
        .map(|name| {
            key.get(*name)
                .and_then(serde_json::Value::as_str)
                .map(|text| ((*name).to_owned(), s(text)))
                .ok_or(StoreError::InvalidCursor)
        })
        .collect::<Result<_, _>>()?;
    Ok((partition, Some(start)))
}

/// Which items of a cancelled transaction failed their condition, by position; any other
/// failure of the request is the store's error.
fn failed_conditions<R>(
    error: SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Result<Vec<bool>, StoreError>
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => Ok(cancelled
            .cancellation_reasons()
            .iter()
            .map(|reason| reason.code() == Some("ConditionalCheckFailed"))
            .collect()),
        _ => Err(sdk(error)),
    }
}

fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

fn decode(mut item: HashMap<String, AttributeValue>) -> Result<Subscription, StoreError> {
    for key in ["pk", "sk", "gsi1pk", "gsi2pk", LISTING_PK, LISTING_SK] {
        item.remove(key);
    }
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn sdk<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    // Kept as the source: `DisplayErrorContext` (and `billing::errors::chain`) name the service
    // error beneath SdkError's own "service error".
    StoreError::Unavailable(Box::new(error))
}

fn build(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("could not build a DynamoDB request: {error}"))
}

const DOC: &str = "DOC";

fn document_pk(key: &str) -> String {
    format!("DOC#{key}")
}

/// Whether a failed `PutItem` failed on its condition.
fn condition_failed<R>(error: &SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError, R>) -> bool {
    error
        .as_service_error()
        .is_some_and(|e| e.is_conditional_check_failed_exception())
}

impl DynamoStore {
    /// Every item of partition `pk` whose sort key starts with `prefix`, in sort-key order,
    /// read strongly consistently page after page.
    /// One page of an operators' list on the `listings` index: `partitions` read in order
    /// (each from `prefix` on its sort key, if given), `customize` adding a filter to each
    /// query, until `limit` items or the last partition; and the cursor to go on from.
    async fn walk_listing(
        &self,
        partitions: &[String],
        prefix: Option<&str>,
        order: Order,
        limit: usize,
        cursor: Option<&serde_json::Value>,
        customize: impl Fn(QueryFluentBuilder) -> QueryFluentBuilder,
    ) -> Result<(Vec<HashMap<String, AttributeValue>>, Option<serde_json::Value>), StoreError> {
        let (mut partition, mut start) = match cursor {
            None => (0, None),
            Some(cursor) => listing_position(cursor, partitions)?,
        };
        let mut items = Vec::new();
        while items.len() < limit && partition < partitions.len() {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(LISTINGS)
                .scan_index_forward(order == Order::OldestFirst)
                .expression_attribute_names("#pk", LISTING_PK)
                .expression_attribute_values(":pk", s(partitions[partition].clone()))
                .limit(i32::try_from(limit - items.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            query = match prefix {
                Some(prefix) => query
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                    .expression_attribute_names("#sk", LISTING_SK)
                    .expression_attribute_values(":prefix", s(prefix)),
                None => query.key_condition_expression("#pk = :pk"),
            };
            let output = customize(query).send().await.map_err(sdk)?;
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            if start.is_none() {
                partition += 1;
            }
        }
        let next = (partition < partitions.len()).then(|| {
            let key: serde_json::Map<String, serde_json::Value> = start
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(name, value)| {
                    value
                        .as_s()
                        .ok()
                        .map(|text| (name, serde_json::Value::from(text.as_str())))
                })
                .collect();
            serde_json::json!({"partition": partition, "key": key})
        });
        Ok((items, next))
    }

    async fn query_prefix(&self, pk: String, prefix: &str) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(pk.clone()))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk)?;
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

/// A conditional document write, as the parts of a `PutItem` or of a transaction's `Put`.
struct DocumentPut {
    item: Option<HashMap<String, AttributeValue>>,
    condition_expression: Option<String>,
    expression_attribute_names: Option<HashMap<String, String>>,
    expression_attribute_values: Option<HashMap<String, AttributeValue>>,
}

impl DynamoStore {
    fn document_put(&self, write: &DocumentWrite<'_>, now: DateTime<Utc>) -> DocumentPut {
        let ttl = TABLE_DEFINITION.ttl_attribute;
        let version = write.expected.map_or(1, |v| v + 1);
        let (pk, sk) = document_keys(write.key);
        let mut item = HashMap::from([
            ("pk".to_owned(), s(pk)),
            ("sk".to_owned(), s(sk)),
            ("body".to_owned(), s(write.body.to_string())),
            ("version".to_owned(), AttributeValue::N(version.to_string())),
        ]);
        if let Some(expiry) = write.expires_at {
            item.insert(ttl.to_owned(), AttributeValue::N(expiry.timestamp().to_string()));
        }
        let (condition, names, values) = match write.expected {
            // TTL deletion runs late: an expired document still present counts as absent.
            None => (
                "attribute_not_exists(pk) OR #ttl <= :now",
                Some(HashMap::from([("#ttl".to_owned(), ttl.to_owned())])),
                HashMap::from([(":now".to_owned(), AttributeValue::N(now.timestamp().to_string()))]),
            ),
            Some(expected) => (
                "version = :expected",
                None,
                HashMap::from([(":expected".to_owned(), AttributeValue::N(expected.to_string()))]),
            ),
        };
        DocumentPut {
            item: Some(item),
            condition_expression: Some(condition.to_owned()),
            expression_attribute_names: names,
            expression_attribute_values: Some(values),
        }
    }
}

/// The sort-key prefix of a collection's members: the partition may also hold the document
/// keyed by the collection's name itself.
const MEMBER: &str = "MEMBER#";

/// The table keys of a document: its own partition, or, for `<collection>/<member>`, the
/// collection's partition with the member in the sort key, so a collection is one query.
fn document_keys(key: &str) -> (String, String) {
    match key.split_once('/') {
        Some((collection, member)) => (document_pk(collection), format!("{MEMBER}{member}")),
        None => (document_pk(key), DOC.to_owned()),
    }
}

/// A stored document, unless it had expired at `now`.
fn decode_document(
    key: &str,
    item: &HashMap<String, AttributeValue>,
    now: DateTime<Utc>,
) -> Result<Option<Document>, StoreError> {
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
    };
    let expires_at = number(TABLE_DEFINITION.ttl_attribute);
    if expires_at.is_some_and(|expiry| expiry <= now.timestamp()) {
        return Ok(None);
    }
    let version = number("version")
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("document {key} has no version")))?;
    let body = item
        .get("body")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("document {key} has no body")))?;
    Ok(Some(Document {
        body: serde_json::from_str(body).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        version,
        expires_at: expires_at.and_then(|e| DateTime::from_timestamp(e, 0)),
    }))
}

#[async_trait]
impl DocumentStore for DynamoStore {
    async fn get_document(&self, key: &str, now: DateTime<Utc>) -> Result<Option<Document>, StoreError> {
        let (pk, sk) = document_keys(key);
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk)?;
        match output.item {
            Some(item) => decode_document(key, &item, now),
            None => Ok(None),
        }
    }

    async fn put_document(
        &self,
        key: &str,
        body: &serde_json::Value,
        expires_at: Option<DateTime<Utc>>,
        expected: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let write = DocumentWrite {
            key,
            body,
            expires_at,
            expected,
        };
        let put = self.document_put(&write, now);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(put.item)
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_names(put.expression_attribute_names)
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(expected.map_or(1, |v| v + 1)),
            Err(e) if condition_failed(&e) => Err(match expected {
                None => StoreError::AlreadyExists,
                Some(_) => StoreError::VersionConflict,
            }),
            Err(e) => Err(sdk(e)),
        }
    }

    async fn put_documents(&self, writes: &[DocumentWrite<'_>], now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut request = self.client.transact_write_items();
        for write in writes {
            let put = self.document_put(write, now);
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(put.item)
                .set_condition_expression(put.condition_expression)
                .set_expression_attribute_names(put.expression_attribute_names)
                .set_expression_attribute_values(put.expression_attribute_values)
                .build()
                .map_err(build)?;
            request = request.transact_items(TransactWriteItem::builder().put(put).build());
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_transaction_canceled_exception()) =>
            {
                Err(StoreError::VersionConflict)
            }
            Err(e) => Err(sdk(e)),
        }
    }

    async fn list_documents(
        &self,
        collection: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Document)>, StoreError> {
        let mut members = Vec::new();
        for item in self.query_prefix(document_pk(collection), MEMBER).await? {
            let member = item
                .get("sk")
                .and_then(|v| v.as_s().ok())
                .and_then(|sk| sk.strip_prefix(MEMBER))
                .ok_or_else(|| StoreError::Corrupt(format!("a member of {collection} without its sort key")))?
                .to_owned();
            if let Some(document) = decode_document(&member, &item, now)? {
                members.push((member, document));
            }
        }
        Ok(members)
    }

    async fn list_documents_range(
        &self,
        collection: &str,
        after: Option<&str>,
        through: &str,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Document)>, StoreError> {
        let mut members = Vec::new();
        let mut start = None;
        let from = format!("{MEMBER}{}", after.unwrap_or(""));
        let to = format!("{MEMBER}{through}");
        if to < from {
            return Ok(members);
        }
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(document_pk(collection)))
                .expression_attribute_values(":from", s(from.clone()))
                .expression_attribute_values(":to", s(to.clone()))
                .consistent_read(true)
                .limit(i32::try_from(limit.saturating_add(1)).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk)?;
            for item in output.items.unwrap_or_default() {
                let Some(member) = item
                    .get("sk")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|sk| sk.strip_prefix(MEMBER))
                    .map(str::to_owned)
                else {
                    continue;
                };
                // BETWEEN is inclusive; the cursor's own member was handed out before.
                if after == Some(member.as_str()) {
                    continue;
                }
                if let Some(document) = decode_document(&member, &item, now)? {
                    members.push((member, document));
                    if members.len() == limit {
                        return Ok(members);
                    }
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(members);
            }
        }
    }
}
