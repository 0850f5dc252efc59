//! SPEC.md §2.1: what a reader sees before and after close(true) and close(false) in each
//! session mode, and whether previous data is kept or replaced. One test per cell of the table.

use tributary_proto::contribution::v1::{Outcome, SessionMode};
use tributary_tests::{country, on_both_backends, Sandbox, World};

/// Commits GB and FR in an accrue session: the "previous data" of each test.
async fn previous_data(world: &mut World) {
    let s = world.open(SessionMode::Accrue).await;
    world
        .upsert(&s, vec![country("GB", 1), country("FR", 2)])
        .await
        .expect("upsert");
    world.close(&s, true, false).await.expect("commit");
}

fn ids(
    world: &std::collections::BTreeMap<String, tributary_proto::catalog::v1::Record>,
) -> Vec<&str> {
    world.keys().map(String::as_str).collect()
}

async fn stream_batches_are_visible_at_once_and_previous_data_kept(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    previous_data(&mut w).await;
    let s = w.open(SessionMode::Stream).await;
    w.upsert(&s, vec![country("DE", 3)]).await.expect("upsert");
    assert_eq!(
        ids(&w.visible().await),
        ["DE", "FR", "GB"],
        "visible before close"
    );
}

async fn stream_close_true_is_a_no_op(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    previous_data(&mut w).await;
    let s = w.open(SessionMode::Stream).await;
    w.upsert(&s, vec![country("DE", 3)]).await.expect("upsert");
    let closed = w.close(&s, true, false).await.expect("close");
    assert_eq!(
        closed.import_result_id, "",
        "stream sessions write no import result"
    );
    assert_eq!(ids(&w.visible().await), ["DE", "FR", "GB"]);
}

async fn stream_close_false_is_a_no_op(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    previous_data(&mut w).await;
    let s = w.open(SessionMode::Stream).await;
    w.upsert(&s, vec![country("DE", 3)]).await.expect("upsert");
    w.close(&s, false, false).await.expect("close");
    assert_eq!(
        ids(&w.visible().await),
        ["DE", "FR", "GB"],
        "already visible data stays"
    );
}

async fn stream_removal_only_by_explicit_delete(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    previous_data(&mut w).await;
    let s = w.open(SessionMode::Stream).await;
    let outcomes = w.delete(&s, &["GB", "XX"]).await.expect("delete");
    assert_eq!(outcomes[0].outcome(), Outcome::Deleted);
    assert_eq!(outcomes[1].outcome(), Outcome::NotFound);
    assert_eq!(ids(&w.visible().await), ["FR"]);
}

async fn accrue_data_is_invisible_until_commit_then_added(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    previous_data(&mut w).await;
    let s = w.open(SessionMode::Accrue).await;
    w.upsert(&s, vec![country("DE", 3), country("GB", 10)])
        .await
        .expect("upsert");
    w.delete(&s, &["FR"]).await.expect("delete");
    let before = w.visible().await;
    assert_eq!(
        ids(&before),
        ["FR", "GB"],
        "session data invisible before commit"
    );
    assert_eq!(
        tributary_tests::entity_number(&before["GB"], "population"),
        1.0
    );
    let closed = w.close(&s, true, false).await.expect("commit");
    let after = w.visible().await;
    assert_eq!(
        ids(&after),
        ["DE", "GB"],
        "upserts and deletes visible after commit"
    );
    assert_eq!(
        tributary_tests::entity_number(&after["GB"], "population"),
        10.0
    );
    let totals = closed.totals.expect("totals");
    assert_eq!(
        (totals.created, totals.updated, totals.deleted, totals.swept),
        (1, 1, 1, 0)
    );
}

async fn accrue_close_false_discards_session_data(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    previous_data(&mut w).await;
    let s = w.open(SessionMode::Accrue).await;
    w.upsert(&s, vec![country("DE", 3), country("GB", 10)])
        .await
        .expect("upsert");
    w.delete(&s, &["FR"]).await.expect("delete");
    w.close(&s, false, false).await.expect("rollback");
    let after = w.visible().await;
    assert_eq!(ids(&after), ["FR", "GB"], "previous data persists");
    assert_eq!(
        tributary_tests::entity_number(&after["GB"], "population"),
        1.0
    );
}

async fn replace_commit_replaces_previous_data(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    previous_data(&mut w).await;
    let s = w.open(SessionMode::Replace).await;
    w.upsert(&s, vec![country("DE", 3), country("GB", 10)])
        .await
        .expect("upsert");
    assert_eq!(
        ids(&w.visible().await),
        ["FR", "GB"],
        "session data invisible before commit"
    );
    let closed = w.close(&s, true, false).await.expect("commit");
    assert_eq!(
        ids(&w.visible().await),
        ["DE", "GB"],
        "FR, not upserted in the session, is swept"
    );
    let totals = closed.totals.expect("totals");
    assert_eq!((totals.created, totals.updated, totals.swept), (1, 1, 1));
}

async fn replace_close_false_leaves_previous_data_untouched(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    previous_data(&mut w).await;
    let before = w.visible().await;
    let s = w.open(SessionMode::Replace).await;
    w.upsert(&s, vec![country("DE", 3)]).await.expect("upsert");
    w.close(&s, false, false).await.expect("rollback");
    assert_eq!(
        w.visible().await,
        before,
        "previous data untouched, versions included"
    );
}

async fn replace_sweeps_only_this_connectors_records(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    previous_data(&mut w).await;
    let (other_id, other_token) = sandbox.create_connector("country", |_| {}).await;
    let mut other = World {
        connector: other_id,
        contributor: sandbox.contributor(&other_token),
        token: other_token,
        reader: w.reader.clone(),
    };
    let s = other.open(SessionMode::Stream).await;
    other
        .upsert(&s, vec![country("GB", 99)])
        .await
        .expect("other connector upserts GB");
    let s = w.open(SessionMode::Replace).await;
    w.upsert(&s, vec![country("DE", 3)]).await.expect("upsert");
    w.close(&s, true, false).await.expect("commit");
    let all = tributary_tests::list_all(&mut w.reader, "country").await;
    assert_eq!(
        all.len(),
        2,
        "this connector's DE and the other connector's GB remain: {:?}",
        all.keys()
    );
    assert!(all
        .values()
        .any(|r| r.id == "GB" && r.connector != w.connector));
}

async fn the_last_operation_on_an_id_wins(sandbox: &Sandbox) {
    let mut w = sandbox.country_world().await;
    let s = w.open(SessionMode::Accrue).await;
    w.upsert(&s, vec![country("DE", 1)]).await.expect("upsert");
    w.delete(&s, &["DE"]).await.expect("delete");
    w.upsert(&s, vec![country("FR", 1), country("FR", 2)])
        .await
        .expect("upsert twice in a batch");
    w.close(&s, true, false).await.expect("commit");
    let all = w.visible().await;
    assert_eq!(ids(&all), ["FR"]);
    assert_eq!(
        tributary_tests::entity_number(&all["FR"], "population"),
        2.0
    );
}

on_both_backends!(
    stream_batches_are_visible_at_once_and_previous_data_kept,
    stream_close_true_is_a_no_op,
    stream_close_false_is_a_no_op,
    stream_removal_only_by_explicit_delete,
    accrue_data_is_invisible_until_commit_then_added,
    accrue_close_false_discards_session_data,
    replace_commit_replaces_previous_data,
    replace_close_false_leaves_previous_data_untouched,
    replace_sweeps_only_this_connectors_records,
    the_last_operation_on_an_id_wins,
);
