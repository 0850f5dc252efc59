//! SPEC.md §2.1: a consumer never sees part of an accrue/replace session, whatever its size.
//!
//! A reader polls, during the commit of a 50,000-record session, one lookup whose ids span both
//! ends of the session (one query, so one snapshot). Every answer must be all-before or
//! all-after; a commit that wrote in several transactions would show a mix.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tributary_proto::catalog::v1::LookupByExternalIdsRequest;
use tributary_proto::contribution::v1::SessionMode;
use tributary_tests::{country, entity_number, on_both_backends, CatalogClient, Sandbox, World};

const RECORDS: usize = 50_000;
const BATCH: usize = 1_000;

async fn send_all(w: &mut World, session: &str, prefix: &str, population: i64) {
    for start in (0..RECORDS).step_by(BATCH) {
        let batch = (start..start + BATCH)
            .map(|i| country(&format!("{prefix}{i}"), population))
            .collect();
        w.upsert(session, batch).await.expect("upsert batch");
    }
}

/// Ids from both ends of a prefix's range: the first and last records a commit writes.
fn ends(prefix: &str, each: usize) -> Vec<String> {
    (0..each)
        .chain(RECORDS - each..RECORDS)
        .map(|i| format!("{prefix}{i}"))
        .collect()
}

/// Polls `ids` until `done`, checking every snapshot with `check`; returns how many polls ran.
fn poll(
    mut reader: CatalogClient,
    connector: String,
    ids: Vec<String>,
    done: Arc<AtomicBool>,
    check: impl Fn(&[tributary_proto::catalog::v1::Record]) -> Result<(), String> + Send + 'static,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut polls = 0;
        loop {
            let finished = done.load(Ordering::SeqCst);
            let records = reader
                .lookup_by_external_ids(LookupByExternalIdsRequest {
                    entity_type: "country".into(),
                    ids: ids.clone(),
                    connector: connector.clone(),
                })
                .await
                .expect("lookup")
                .into_inner()
                .records;
            if let Err(problem) = check(&records) {
                panic!("partial state seen on poll {polls}: {problem}");
            }
            polls += 1;
            if finished {
                return polls;
            }
        }
    })
}

async fn a_reader_never_sees_part_of_a_large_accrue_or_replace_commit(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let load = w.open(SessionMode::Accrue).await;
    send_all(&mut w, &load, "A", 1).await;
    w.close(&load, true, false).await.expect("initial commit");

    // Accrue: every record changes from population 1 to 2.
    let session = w.open(SessionMode::Accrue).await;
    send_all(&mut w, &session, "A", 2).await;
    let done = Arc::new(AtomicBool::new(false));
    let reader = poll(
        w.reader.clone(),
        w.connector.clone(),
        ends("A", 500),
        done.clone(),
        |records| {
            if records.len() != 1000 {
                return Err(format!("{} of 1000 records visible", records.len()));
            }
            let populations: std::collections::BTreeSet<i64> = records
                .iter()
                .map(|r| entity_number(r, "population") as i64)
                .collect();
            if populations.len() == 1 {
                Ok(())
            } else {
                Err(format!("populations {populations:?}"))
            }
        },
    );
    let totals = w
        .close(&session, true, false)
        .await
        .expect("accrue commit")
        .totals
        .expect("totals");
    done.store(true, Ordering::SeqCst);
    let polls = reader.await.expect("reader");
    assert_eq!(totals.updated, RECORDS as u64);
    assert!(polls >= 1);
    let after = w.get("A0").await.expect("A0");
    assert_eq!(entity_number(&after, "population"), 2.0);

    // Replace: set A is replaced by set B.
    let session = w.open(SessionMode::Replace).await;
    send_all(&mut w, &session, "B", 3).await;
    let done = Arc::new(AtomicBool::new(false));
    let mut ids = ends("A", 250);
    ids.extend(ends("B", 250));
    let reader = poll(
        w.reader.clone(),
        w.connector.clone(),
        ids,
        done.clone(),
        |records| {
            let a = records.iter().filter(|r| r.id.starts_with('A')).count();
            let b = records.iter().filter(|r| r.id.starts_with('B')).count();
            match (a, b) {
                (500, 0) | (0, 500) => Ok(()),
                _ => Err(format!("{a} old and {b} new records visible")),
            }
        },
    );
    let totals = w
        .close(&session, true, false)
        .await
        .expect("replace commit")
        .totals
        .expect("totals");
    done.store(true, Ordering::SeqCst);
    reader.await.expect("reader");
    assert_eq!(
        (totals.created, totals.swept),
        (RECORDS as u64, RECORDS as u64)
    );
    assert!(w.get("A0").await.is_none());
    assert!(w.get("B49999").await.is_some());
}

on_both_backends!(a_reader_never_sees_part_of_a_large_accrue_or_replace_commit);
