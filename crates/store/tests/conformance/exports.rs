//! Exports (SPEC.md §7): definitions, the run history, and claims of scheduled runs.

use super::support::*;
use serde_json::json;
use std::time::Duration;
use tributary_core::error::ResourceKind;
use tributary_core::export::{Export, ExportFormat, ExportRun};
use tributary_core::ids::new_id;
use tributary_core::model::ImportStatus;
use tributary_core::source::store::Claim;
use tributary_core::source::Schedule;
use tributary_core::Error;
use tributary_store::testing::TestDb;

conformance!(
    export_crud_keeps_names_unique_and_needs_its_entity_type,
    export_runs_list_newest_first_with_paging_and_go_with_their_export,
    due_exports_are_claimed_by_one_holder_until_released_or_expired,
    deleting_the_entity_type_deletes_its_exports,
);

async fn country(db: &TestDb) {
    match db
        .store
        .create_entity_type(&entity_type("country", country_schema()))
        .await
    {
        Ok(()) | Err(Error::AlreadyExists { .. }) => {}
        Err(e) => panic!("{e}"),
    }
}

fn export(name: &str) -> Export {
    Export {
        id: new_id(),
        name: name.into(),
        entity_type: "country".into(),
        filter: json!({"entity.population": {"gt": 5}}).to_string(),
        format: ExportFormat::Csv,
        destination: "s3://bucket/prefix".into(),
        schedule: Schedule::Interval(Duration::from_secs(3600)),
        enabled: true,
        created_at: T0,
        updated_at: T0,
    }
}

fn run(export_id: &str, started_at: i64) -> ExportRun {
    ExportRun {
        id: new_id(),
        export_id: export_id.into(),
        status: ImportStatus::Succeeded,
        started_at,
        ended_at: started_at + SEC,
        records: 3,
        bytes: 120,
        location: format!("s3://bucket/prefix/x-{started_at}.csv"),
        error: None,
    }
}

async fn export_crud_keeps_names_unique_and_needs_its_entity_type(db: &TestDb) {
    let s = &db.store;
    let orphan = Export {
        entity_type: "nope".into(),
        ..export("orphan")
    };
    assert!(matches!(
        s.create_export(&orphan, None).await,
        Err(Error::NotFound {
            kind: ResourceKind::EntityType,
            ..
        })
    ));
    country(db).await;
    let a = export("a");
    s.create_export(&a, Some(T0)).await.unwrap();
    assert_eq!(s.get_export(&a.id).await.unwrap(), a);
    assert!(matches!(
        s.create_export(&export("a"), None).await,
        Err(Error::AlreadyExists {
            kind: ResourceKind::Export,
            ..
        })
    ));
    let b = Export {
        schedule: Schedule::Cron("*/5 * * * *".into()),
        format: ExportFormat::Ndjson,
        ..export("b")
    };
    s.create_export(&b, None).await.unwrap();
    let first = s.list_exports(None, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let rest = s.list_exports(Some(&first[0].id), 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_ne!(first[0].id, rest[0].id);

    let changed = Export {
        name: "a2".into(),
        filter: String::new(),
        format: ExportFormat::Json,
        destination: "file:///data/out".into(),
        schedule: Schedule::Rest,
        enabled: false,
        updated_at: T0 + SEC,
        ..a.clone()
    };
    assert_eq!(s.update_export(&changed, None).await.unwrap(), changed);
    assert_eq!(s.get_export(&a.id).await.unwrap(), changed);
    let taken = Export {
        name: "b".into(),
        ..changed.clone()
    };
    assert!(matches!(
        s.update_export(&taken, None).await,
        Err(Error::AlreadyExists { .. })
    ));
    let ghost = export("ghost");
    assert!(matches!(
        s.update_export(&ghost, None).await,
        Err(Error::NotFound {
            kind: ResourceKind::Export,
            ..
        })
    ));
    s.delete_export(&a.id).await.unwrap();
    assert!(matches!(
        s.get_export(&a.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.delete_export(&a.id).await,
        Err(Error::NotFound { .. })
    ));
}

async fn export_runs_list_newest_first_with_paging_and_go_with_their_export(db: &TestDb) {
    let s = &db.store;
    country(db).await;
    let e = export("runs");
    s.create_export(&e, None).await.unwrap();
    let runs: Vec<ExportRun> = (0..5).map(|i| run(&e.id, T0 + i * 10 * SEC)).collect();
    for r in &runs {
        s.record_export_run(r).await.unwrap();
    }
    let failed = ExportRun {
        status: ImportStatus::Failed,
        error: Some("bucket does not exist".into()),
        ..run(&e.id, T0 + 100 * SEC)
    };
    s.record_export_run(&failed).await.unwrap();
    let page = s.list_export_runs(&e.id, None, 4).await.unwrap();
    assert_eq!(page[0], failed);
    assert_eq!(page[1], runs[4]);
    assert_eq!(page[3], runs[2]);
    let next = s
        .list_export_runs(&e.id, Some(&page[3].id), 4)
        .await
        .unwrap();
    assert_eq!(next, [runs[1].clone(), runs[0].clone()]);
    assert!(matches!(
        s.list_export_runs("nope", None, 4).await,
        Err(Error::NotFound {
            kind: ResourceKind::Export,
            ..
        })
    ));
    assert!(matches!(
        s.record_export_run(&run("nope", T0)).await,
        Err(Error::NotFound { .. })
    ));
    s.delete_export(&e.id).await.unwrap();
    assert!(matches!(
        s.list_export_runs(&e.id, None, 4).await,
        Err(Error::NotFound { .. })
    ));
}

async fn due_exports_are_claimed_by_one_holder_until_released_or_expired(db: &TestDb) {
    let s = &db.store;
    country(db).await;
    let due = export("due");
    s.create_export(&due, Some(T0)).await.unwrap();
    let later = export("later");
    s.create_export(&later, Some(T0 + DAY)).await.unwrap();
    s.create_export(&export("on-demand"), None).await.unwrap();
    let disabled = Export {
        enabled: false,
        ..export("disabled")
    };
    s.create_export(&disabled, Some(T0)).await.unwrap();
    assert_eq!(s.next_export_due().await.unwrap(), Some(T0));

    let claim = |holder: &'static str, now: i64| Claim {
        holder,
        now,
        lease_until: now + 10 * SEC,
        limit: 10,
    };
    let claimed = s.claim_exports(&claim("one", T0 + SEC)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0], due);
    assert!(s
        .claim_exports(&claim("two", T0 + 2 * SEC))
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .renew_export_lease(&due.id, "one", T0 + 30 * SEC)
        .await
        .unwrap());
    assert!(!s
        .renew_export_lease(&due.id, "two", T0 + 30 * SEC)
        .await
        .unwrap());
    // The lease expired: another holder takes over, and the first one's release is refused.
    let taken = s.claim_exports(&claim("two", T0 + 31 * SEC)).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert!(!s.release_export(&due.id, "one", Some(T0)).await.unwrap());
    assert!(s
        .release_export(&due.id, "two", Some(T0 + DAY))
        .await
        .unwrap());
    assert!(s
        .claim_exports(&claim("three", T0 + 40 * SEC))
        .await
        .unwrap()
        .is_empty());
    let both = s.claim_exports(&claim("three", T0 + DAY)).await.unwrap();
    assert_eq!(both.len(), 2);
}

async fn deleting_the_entity_type_deletes_its_exports(db: &TestDb) {
    let s = &db.store;
    country(db).await;
    let e = export("gone");
    s.create_export(&e, None).await.unwrap();
    s.record_export_run(&run(&e.id, T0)).await.unwrap();
    s.delete_entity_type("country", true).await.unwrap();
    assert!(matches!(
        s.get_export(&e.id).await,
        Err(Error::NotFound { .. })
    ));
}
