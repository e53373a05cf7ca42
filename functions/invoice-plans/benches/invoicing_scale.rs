//! The invoicing run over 1,000 and then 10,000 due plans in the embedded store (in memory),
//! Stripe in memory (`FakeBilling`): what it measures is the service's own work per plan —
//! reading the due-date index a page at a time, loading each book, running its end of cycle and
//! invoice, writing it back. The time per plan should be flat between the two sizes: the run
//! reads only the plans due, never a scan of the table.

use std::sync::Arc;
use std::time::Instant;

use billing::plans::Entity;
use billing::plans::invoicing::{EntityOutcome, invoice_plans};
use billing::remote::usage::{UploadMarker, usage_collection};
use billing::store::{DocumentStore, member_key};
use billing_testing::{FakeBilling, in_memory_store, store_automatic_basic_plan};
use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// `count` servers, each on a basic plan bought at the start and uploaded a month later.
async fn seed(documents: &dyn DocumentStore, count: usize) {
    let uploaded = start() + Duration::days(32);
    let marker = serde_json::to_value(UploadMarker {
        last_audit_log_id: None,
        last_upload_at: Some(uploaded),
    })
    .unwrap();
    for _ in 0..count {
        let server = Uuid::new_v4();
        store_automatic_basic_plan(
            documents,
            Entity::Server(server),
            6,
            Some(format!("cus_{}", server.simple())),
            start(),
        )
        .await;
        documents
            .put_document(
                &member_key(&usage_collection(server), "marker"),
                &marker,
                None,
                None,
                uploaded,
            )
            .await
            .unwrap();
    }
}

/// Seconds for one run over `count` due plans, and the number invoiced.
async fn run(count: usize) -> (f64, usize) {
    let documents = in_memory_store();
    seed(documents.as_ref(), count).await;
    let stripe = Arc::new(FakeBilling::new(start()));
    let at = start() + Duration::days(33);
    let started = Instant::now();
    let report = invoice_plans(documents.as_ref(), stripe.as_ref(), at).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let invoiced = report
        .outcomes
        .iter()
        .filter(|o| matches!(o, EntityOutcome::Invoiced { .. }))
        .count();
    assert_eq!(invoiced, count, "every due plan invoiced once");
    (elapsed, invoiced)
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("INVOICING_BENCH_SIZES")
        .ok()
        .map(|text| text.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    let mut baseline = None;
    println!("| due plans | run | per plan | per plan, ratio to the first size |");
    println!("|---|---|---|---|");
    for size in sizes {
        let (seconds, invoiced) = run(size).await;
        let per_plan = seconds * 1e6 / invoiced as f64;
        let base = *baseline.get_or_insert(per_plan);
        println!(
            "| {size} | {:.2} s | {per_plan:.0} µs | {:.2} |",
            seconds,
            per_plan / base
        );
    }
}
