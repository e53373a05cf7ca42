//! Signup provisioning end to end: events on an SQS queue in moto, the local server in `--aws`
//! mode polling it like an event source mapping, DynamoDB in moto, Stripe in the sandbox.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use billing::store::StoreError;
use bundle_tests::{all_stripe_customers, start_server_against_moto_with};
use serde_json::json;
use uuid::Uuid;

/// A queue with a dead-letter queue after five receives (as the template has it), and a
/// one-second visibility timeout so redelivery happens within the test.
async fn queues(sqs: &aws_sdk_sqs::Client) -> (String, String) {
    let name = format!("signups-{}", Uuid::new_v4().simple());
    let dead = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&dead)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let redrive = json!({"deadLetterTargetArn": arn, "maxReceiveCount": 5}).to_string();
    let queue = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    (queue, dead)
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .map(|a| attributes[a].parse::<usize>().unwrap())
    .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_signups_with_duplicates_and_poison_make_97_subscriptions_and_97_customers() {
    bundle_tests::moto_endpoint();
    let sqs = aws_sdk_sqs::Client::new(&billing_adapters::aws::load_sdk_config().await);
    let (queue, dead) = queues(&sqs).await;
    let server = start_server_against_moto_with(&[("SIGNUP_QUEUE_URL", &queue)]).await;

    // Given 100 events: 97 profiles (10 of them sent twice) and 3 poison messages
    let users: Vec<Uuid> = (0..97).map(|_| Uuid::new_v4()).collect();
    let mut bodies: Vec<String> = users
        .iter()
        .map(|user| {
            json!({"type": "profile.created", "event_id": Uuid::new_v4(), "user_id": user,
                   "email": format!("{}@example.com", user.simple()), "created_at": chrono::Utc::now().to_rfc3339()})
            .to_string()
        })
        .collect();
    let duplicates: Vec<String> = bodies[..10].to_vec();
    bodies.extend([
        "not json at all".to_owned(),
        json!({"type": "profile.created", "user_id": "nobody"}).to_string(),
        "[]".to_owned(),
    ]);
    bodies.extend(duplicates);
    for chunk in bodies.chunks(10) {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("e{i}"))
                    .message_body(body)
                    .build()
                    .unwrap()
            })
            .collect();
        sqs.send_message_batch()
            .queue_url(&queue)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
    }

    // When the local server has drained the queue
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (pending, dead_letters) = (depth(&sqs, &queue).await, depth(&sqs, &dead).await);
        if pending == 0 && dead_letters == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue not drained: {pending} pending, {dead_letters} dead letters"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Then every profile has exactly one subscription, and Stripe exactly one customer each
    let mut stored = 0;
    for user in &users {
        match server.store.get_subscription(*user).await {
            Ok(subscription) => {
                assert_eq!(subscription.plan, "pending");
                stored += 1;
            }
            Err(StoreError::NotFound) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(stored, 97);
    let customers = all_stripe_customers(server.sandbox.as_ref().unwrap()).await;
    assert_eq!(customers.len(), 97);
    let emails: std::collections::HashSet<_> = customers
        .iter()
        .map(|c| c["email"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(emails.len(), 97);
    // And the three poison messages are in the dead-letter queue, intact
    let received = sqs
        .receive_message()
        .queue_url(&dead)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let mut poison: Vec<String> = received
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.body)
        .collect();
    poison.sort();
    assert_eq!(
        poison,
        vec![
            "[]".to_owned(),
            "not json at all".to_owned(),
            json!({"type": "profile.created", "user_id": "nobody"}).to_string()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_failure_on_one_signup_redelivers_only_that_one_and_makes_no_duplicate() {
    bundle_tests::moto_endpoint();
    let sqs = aws_sdk_sqs::Client::new(&billing_adapters::aws::load_sdk_config().await);
    let (queue, dead) = queues(&sqs).await;
    let server = start_server_against_moto_with(&[("SIGNUP_QUEUE_URL", &queue)]).await;
    let sandbox = server.sandbox.as_ref().unwrap();
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    // Stripe fails every attempt to make the second user's subscription, for now
    sandbox
        .sandbox
        .fail_next_matching(1000, 500, Some("/v1/subscriptions"), Some(&users[1].to_string()));
    let entries: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let body = json!({"type": "profile.created", "event_id": Uuid::new_v4(), "user_id": user,
                              "email": format!("{}@example.com", user.simple()), "created_at": chrono::Utc::now().to_rfc3339()});
            SendMessageBatchRequestEntry::builder().id(format!("e{i}")).message_body(body.to_string()).build().unwrap()
        })
        .collect();
    sqs.send_message_batch()
        .queue_url(&queue)
        .set_entries(Some(entries))
        .send()
        .await
        .unwrap();

    // The other two are stored while the second keeps coming back
    bundle_tests::eventually(30, "the first and third subscriptions", || async {
        server.store.get_subscription(users[0]).await.is_ok() && server.store.get_subscription(users[2]).await.is_ok()
    })
    .await;
    assert!(matches!(
        server.store.get_subscription(users[1]).await,
        Err(StoreError::NotFound)
    ));
    // Only the failing message stays (the others are deleted once their batch is answered)
    bundle_tests::eventually(30, "the acknowledged messages to be deleted", || async {
        depth(&sqs, &queue).await == 1
    })
    .await;
    assert!(matches!(
        server.store.get_subscription(users[1]).await,
        Err(StoreError::NotFound)
    ));

    // Stripe recovers: the redelivery succeeds, and nobody has two customers
    sandbox.sandbox.fail_next(0, 500);
    bundle_tests::eventually(30, "the second subscription", || async {
        server.store.get_subscription(users[1]).await.is_ok()
    })
    .await;
    bundle_tests::eventually(10, "the queue to drain", || async { depth(&sqs, &queue).await == 0 }).await;
    assert_eq!(depth(&sqs, &dead).await, 0);
    let customers = all_stripe_customers(sandbox).await;
    for user in &users {
        let email = format!("{}@example.com", user.simple());
        assert_eq!(
            customers.iter().filter(|c| c["email"] == email.as_str()).count(),
            1,
            "{email}"
        );
    }
}
