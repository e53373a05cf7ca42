//! The lifecycle endpoints in-process, against the embedded store and the Stripe sandbox.

use std::sync::Arc;

use billing::store::Store;
use billing_http::Cors;
use billing_testing::{ApiEvent, catalog, embedded_store};
use serde_json::{Value, json};
use stripe_sandbox::RunningSandbox;
use subscription_lifecycle::{SubscriptionLifecycle, routes};
use uuid::Uuid;

struct Fixture {
    function: Arc<SubscriptionLifecycle>,
    sandbox: RunningSandbox,
    store: Arc<dyn Store>,
}

async fn fixture() -> Fixture {
    let (sandbox, billing) = billing_testing::sandbox_billing(800, billing_testing::fast_retries()).await;
    let store: Arc<dyn Store> = embedded_store();
    let function = Arc::new(
        SubscriptionLifecycle {
            store: store.clone(),
            billing,
            catalog: catalog(),
            cors: Cors::default(),
            return_origins: billing::lifecycle::return_origins("https://app.example.com", None),
            clock: Arc::new(billing_adapters::SystemClock),
            idempotency: billing_http::idempotent::Idempotency {
                documents: billing_testing::in_memory_store(),
                clock: std::sync::Arc::new(billing_adapters::SystemClock),
            },
        }
        .declared(),
    );
    Fixture {
        function,
        sandbox,
        store,
    }
}

impl Fixture {
    /// A subscriber on `basic_monthly` paying with a card: its first invoice is paid.
    async fn paying_subscriber(&self) -> billing::subscription::Subscription {
        billing_testing::provision_subscriber(
            self.store.as_ref(),
            self.function.billing.as_ref(),
            "basic_monthly",
            Some("pm_card_visa"),
        )
        .await
    }

    async fn call(&self, event: ApiEvent) -> (u16, Value) {
        let response = self.function.handle(event.build()).await;
        let status = response.status().as_u16();
        (status, serde_json::from_slice(response.body()).unwrap_or(Value::Null))
    }
}

fn on(route: &str, caller: Uuid, scope: &str, id: Uuid) -> ApiEvent {
    let path = format!("/subscriptions/{id}/{}", route.rsplit('/').next().unwrap());
    ApiEvent::sample("apigw-subscription-invoices.json")
        .caller(caller, scope)
        .route(route, &path, &[("id", &id.to_string())])
        .header("content-type", "application/json")
        .query(&[])
}

fn slugs_and_pointers(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["slug"].as_str().unwrap().to_owned(),
                e["field"].as_str().or(e["param"].as_str()).unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn owner_gets_a_setup_intent_on_their_own_customer() {
    let f = fixture().await;
    let mine = f.paying_subscriber().await;
    let (status, body) = f
        .call(on(routes::SETUP_INTENT, mine.id, "subscriptions", mine.id))
        .await;
    assert_eq!(status, 201, "{body}");
    let intent = &body["setup_intents"][0];
    let id = intent["id"].as_str().unwrap();
    assert!(
        intent["client_secret"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{id}_secret_"))
    );
    let stored = billing_testing::stripe_get(&f.sandbox, &format!("/v1/setup_intents/{id}")).await;
    assert_eq!(stored["customer"], mine.stripe_customer.unwrap().as_str());
    assert_eq!(stored["usage"], "off_session");
}

#[tokio::test]
async fn a_caller_asking_for_setup_intents_in_a_loop_is_told_to_wait_and_stripe_is_not_called() {
    // Given an owner who asked for the limit's worth of setup intents this minute
    let f = fixture().await;
    let mine = f.paying_subscriber().await;
    let limit = billing::limits::STRIPE_CALLS_PER_CALLER.calls;
    for _ in 0..limit {
        let (status, body) = f
            .call(on(routes::SETUP_INTENT, mine.id, "subscriptions", mine.id))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let customer = mine.stripe_customer.clone().unwrap();
    let made = |list: Value| list["data"].as_array().map_or(0, Vec::len);
    let before = made(
        billing_testing::stripe_get(&f.sandbox, &format!("/v1/setup_intents?customer={customer}&limit=100")).await,
    );
    // When it asks once more, and asks for a preview
    let event = on(routes::SETUP_INTENT, mine.id, "subscriptions", mine.id);
    let response = f.function.handle(event.build()).await;
    // Then it is 429 with Retry-After, and no SetupIntent was made
    assert_eq!(response.status().as_u16(), 429);
    let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let after = made(
        billing_testing::stripe_get(&f.sandbox, &format!("/v1/setup_intents?customer={customer}&limit=100")).await,
    );
    assert_eq!(before, after);
    // And other operations and other callers have limits of their own
    let (status, body) = f
        .call(on(routes::PREVIEW, mine.id, "subscriptions", mine.id).body(&json!({"plan": "business_monthly"})))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn portal_session_returns_only_to_an_allowed_origin() {
    let f = fixture().await;
    let mine = f.paying_subscriber().await;
    // Given a return URL on another site, then it is refused and no session is made
    let (status, body) = f
        .call(
            on(routes::PORTAL_SESSION, mine.id, "subscriptions", mine.id)
                .body(&json!({"return_url": "https://evil.example.net/"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        slugs_and_pointers(&body),
        [("invalid_value".into(), "/return_url".into())]
    );
    // Given the app's own origin, then the portal URL comes back
    let (status, body) = f
        .call(
            on(routes::PORTAL_SESSION, mine.id, "subscriptions", mine.id)
                .body(&json!({"return_url": "https://app.example.com/account"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body["portal_sessions"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    // And an unknown field or a missing return URL is reported on its pointer
    let (status, body) = f
        .call(on(routes::PORTAL_SESSION, mine.id, "subscriptions", mine.id).body(&json!({"colour": 1})))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        slugs_and_pointers(&body),
        [
            ("invalid_format".into(), "/colour".into()),
            ("missing".into(), "/return_url".into())
        ]
    );
}

#[tokio::test]
async fn invoices_are_listed_newest_first_a_page_at_a_time() {
    let f = fixture().await;
    let mine = f.paying_subscriber().await;
    let stripe_subscription = mine.stripe_subscription.clone().unwrap();
    // Given two license increases, each invoiced at once, after the first invoice
    for count in [3, 5] {
        f.function
            .billing
            .set_quantity(&stripe_subscription, count, &format!("k:{count}"))
            .await
            .unwrap();
    }
    // When the first page of two is read
    let (status, first) = f
        .call(on(routes::INVOICES, mine.id, "subscriptions", mine.id).query(&[("limit", "2")]))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["has_more"], true);
    let page: Vec<&Value> = first["invoices"].as_array().unwrap().iter().collect();
    assert_eq!(page.len(), 2);
    assert!(page[0]["created"].as_str() >= page[1]["created"].as_str());
    for field in [
        "id",
        "number",
        "status",
        "amount_due",
        "amount_paid",
        "currency",
        "hosted_invoice_url",
        "invoice_pdf",
    ] {
        assert!(!page[0][field].is_null(), "{field} in {}", page[0]);
    }
    // Then the next page has the first invoice, paid for one license
    let after = page[1]["id"].as_str().unwrap();
    let (_, second) = f
        .call(
            on(routes::INVOICES, mine.id, "subscriptions", mine.id).query(&[("limit", "2"), ("starting_after", after)]),
        )
        .await;
    assert_eq!(second["has_more"], false);
    assert_eq!(second["invoices"].as_array().unwrap().len(), 1);
    assert_eq!(second["invoices"][0]["amount_paid"], 800);
    // And bad paging parameters are reported together
    let (status, body) = f
        .call(
            on(routes::INVOICES, mine.id, "subscriptions", mine.id).query(&[("limit", "500"), ("starting_after", "x")]),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        slugs_and_pointers(&body),
        [
            ("invalid_value".into(), "limit".into()),
            ("invalid_format".into(), "starting_after".into())
        ]
    );
}

#[tokio::test]
async fn preview_of_more_licenses_shows_prorated_lines_and_changes_nothing() {
    let f = fixture().await;
    let mine = f.paying_subscriber().await;
    let admin = Uuid::new_v4();
    let (status, body) = f
        .call(on(routes::PREVIEW, admin, "subscriptions subscriptions_admin", mine.id).body(&json!({"licenses": 3})))
        .await;
    assert_eq!(status, 200, "{body}");
    let preview = &body["previews"][0];
    let lines = preview["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{preview}");
    assert!(lines.iter().all(|l| l["proration"] == true));
    assert!(lines[0]["amount"].as_i64().unwrap() < 0 && lines[1]["amount"].as_i64().unwrap() > 0);
    assert!(preview["amount_due"].as_i64().unwrap() > 0);
    assert_eq!(preview["currency"], "usd");
    // Nothing changed in Stripe or the store
    let stripe = billing_testing::stripe_get(
        &f.sandbox,
        &format!("/v1/subscriptions/{}", mine.stripe_subscription.as_deref().unwrap()),
    )
    .await;
    assert_eq!(stripe["items"]["data"][0]["quantity"], 1);
    assert_eq!(f.store.get_subscription(mine.id).await.unwrap(), mine);
}

#[tokio::test]
async fn preview_by_the_owner_is_validated_like_their_patch() {
    let f = fixture().await;
    let mine = f.paying_subscriber().await;
    let (status, body) = f
        .call(
            on(routes::PREVIEW, mine.id, "subscriptions", mine.id)
                .body(&json!({"licenses": 3, "plan": "gold", "email": "x@example.com"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let found = slugs_and_pointers(&body);
    assert!(
        found.contains(&("access_denied".into(), "/licenses".into())),
        "{found:?}"
    );
    assert!(found.contains(&("invalid_value".into(), "/plan".into())), "{found:?}");
    assert!(found.contains(&("invalid_format".into(), "/email".into())), "{found:?}");
}

#[tokio::test]
async fn someone_elses_subscription_is_refused_on_every_route() {
    let f = fixture().await;
    let theirs = f.paying_subscriber().await;
    let me = Uuid::new_v4();
    for route in [
        routes::SETUP_INTENT,
        routes::PORTAL_SESSION,
        routes::INVOICES,
        routes::PREVIEW,
    ] {
        let (status, body) = f
            .call(on(route, me, "subscriptions", theirs.id).body(&json!({"return_url": "https://app.example.com/"})))
            .await;
        assert_eq!(status, 403, "{route}: {body}");
        assert_eq!(body["errors"][0]["slug"], "access_denied");
    }
}

#[tokio::test]
async fn an_unknown_subscription_is_not_found() {
    let f = fixture().await;
    let admin = Uuid::new_v4();
    let (status, body) = f
        .call(on(
            routes::INVOICES,
            admin,
            "subscriptions subscriptions_admin",
            Uuid::new_v4(),
        ))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["errors"][0]["slug"], "not_found");
}
