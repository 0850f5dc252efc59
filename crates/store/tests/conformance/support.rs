//! What every area of the suite shares: logical time, fixtures, and assertions.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use tributary_core::checksum::{canonical_json, record_checksum};
use tributary_core::ids::{new_connector_id, record_key};
use tributary_core::model::{
    Connector, EntityType, Outcome, SessionMode, SessionTotals, StoredRecord, WritePolicy,
};
use tributary_core::record::PreparedRecord;
use tributary_core::record::{KeyedDigest, KeyedId};
pub use tributary_core::store::ImportResultFilter;
use tributary_core::store::{BatchResult, SessionCall};
use tributary_core::Error;
use tributary_store::testing::TestDb;

/// Logical time: tests pass explicit instants, one second apart.
pub const T0: i64 = 1_700_000_000_000_000;
pub const SEC: i64 = 1_000_000;
pub const DAY: i64 = 86_400 * SEC;

/// Unwraps a batch's result: it must have succeeded and been applied.
pub trait AppliedOk<T> {
    fn applied_ok(self) -> T;
}

impl<T> AppliedOk<T> for tributary_core::Result<BatchResult<T>> {
    #[track_caller]
    fn applied_ok(self) -> T {
        match self {
            Ok(BatchResult::Applied(value)) => value,
            Ok(BatchResult::AlreadyApplied) => panic!("batch was already applied"),
            Err(e) => panic!("batch failed: {e}"),
        }
    }
}

pub fn entity_type(slug: &str, schema: Value) -> EntityType {
    EntityType {
        slug: slug.into(),
        name: format!("Type {slug}"),
        description: "for tests".into(),
        schema,
        schema_version: 1,
        created_at: T0,
        updated_at: T0,
    }
}

pub fn country_schema() -> Value {
    json!({"type": "object", "properties": {"population": {"type": "integer"}}})
}

/// A connector of `country` (created on first use) with `policy` and removal guard `guard`.
pub async fn connector(db: &TestDb, policy: WritePolicy, guard: Option<f64>) -> Connector {
    match db
        .store
        .create_entity_type(&entity_type("country", country_schema()))
        .await
    {
        Ok(()) | Err(Error::AlreadyExists { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    let c = Connector {
        id: new_connector_id(),
        name: "test connector".into(),
        entity_type: "country".into(),
        write_policy: policy,
        reject_removals_above_percent: guard,
        rate_limit: None,
        created_at: T0,
    };
    db.store
        .create_connector(&c, &format!("hash-{}", c.id))
        .await
        .unwrap();
    c
}

pub fn record(c: &Connector, id: &str, population: i64) -> PreparedRecord {
    let name = format!("Name {id}");
    let entity = canonical_json(&json!({"population": population})).unwrap();
    let instance = "{}".to_owned();
    let checksum = record_checksum(&name, &entity, &instance);
    PreparedRecord {
        id: id.into(),
        key: record_key(&c.entity_type, &c.id, id),
        name,
        entity,
        instance,
        checksum,
    }
}

pub fn key(c: &Connector, id: &str) -> String {
    record_key(&c.entity_type, &c.id, id)
}

pub fn keyed(c: &Connector, id: &str) -> KeyedId {
    KeyedId {
        id: id.into(),
        key: key(c, id),
    }
}

pub fn call<'a>(session: &'a str, c: &'a Connector, now: i64) -> SessionCall<'a> {
    SessionCall {
        session_id: session,
        connector: c,
        now,
        idle_cutoff: now - DAY,
        batch_seq: None,
    }
}

/// A streamed batch's call: `call` with a `batch_seq`.
pub fn seq_call<'a>(session: &'a str, c: &'a Connector, now: i64, seq: u64) -> SessionCall<'a> {
    SessionCall {
        batch_seq: Some(seq),
        ..call(session, c, now)
    }
}

/// The digest of `record(c, id, population)`.
pub fn digest(c: &Connector, id: &str, population: i64) -> KeyedDigest {
    let r = record(c, id, population);
    KeyedDigest {
        id: r.id,
        key: r.key,
        checksum: r.checksum,
    }
}

pub async fn open(db: &TestDb, c: &Connector, mode: SessionMode, now: i64) -> String {
    db.store
        .open_session(c, mode, now)
        .await
        .unwrap()
        .session
        .id
}

/// Commits accrue/replace session `s` of `c` at `now` (unforced); answers its totals.
pub async fn commit(db: &TestDb, s: &str, c: &Connector, now: i64) -> SessionTotals {
    db.store
        .close_session(&call(s, c, now), true, false)
        .await
        .unwrap()
        .totals
}

/// Writes `records` through a stream session at `now`.
pub async fn stream(
    db: &TestDb,
    c: &Connector,
    records: &[PreparedRecord],
    now: i64,
) -> Vec<Outcome> {
    let s = open(db, c, SessionMode::Stream, now).await;
    let outcomes = db
        .store
        .upsert_batch(&call(&s, c, now), records)
        .await
        .applied_ok();
    db.store
        .close_session(&call(&s, c, now), true, false)
        .await
        .unwrap();
    outcomes
}

pub async fn get(db: &TestDb, c: &Connector, id: &str) -> Option<StoredRecord> {
    db.store.get_record(&key(c, id)).await.unwrap()
}

/// The external ids of the connector's visible records.
pub async fn visible_ids(db: &TestDb, c: &Connector) -> BTreeSet<String> {
    let all = db
        .store
        .list_records(&c.entity_type, None, 10_000)
        .await
        .unwrap();
    all.into_iter()
        .filter(|r| r.connector == c.id)
        .map(|r| r.id)
        .collect()
}

pub fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

pub fn assert_denied<T: std::fmt::Debug>(result: Result<T, Error>) {
    match result {
        Err(Error::PermissionDenied(message)) => {
            assert!(message.contains("not an open session"), "{message}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

pub fn totals(
    created: u64,
    updated: u64,
    unchanged: u64,
    deleted: u64,
    swept: u64,
    skipped: u64,
) -> SessionTotals {
    SessionTotals {
        created,
        updated,
        unchanged,
        deleted,
        swept,
        skipped,
    }
}

/// The import results of connector `id`.
pub fn of_connector(id: &str) -> ImportResultFilter<'_> {
    ImportResultFilter {
        connector: Some(id),
        ..Default::default()
    }
}
