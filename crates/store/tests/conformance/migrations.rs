//! Migrations: several replicas starting at once on one fresh database.

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_opens_of_a_fresh_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fresh.db").display());
    let opened = futures::future::join_all((0..4).map(|_| tributary_store::open(&url))).await;
    for store in opened {
        assert_eq!(store.unwrap().count_records("country").await.unwrap(), 0);
    }
}

#[tokio::test]
async fn sqlite_in_memory_database_works() {
    let store = tributary_store::open("sqlite::memory:").await.unwrap();
    store
        .create_entity_type(&entity_type("country", country_schema()))
        .await
        .unwrap();
    assert_eq!(store.list_entity_types(None, 10).await.unwrap().len(), 1);
}

tributary_test_harness::postgres_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_concurrent_migrations_on_a_fresh_database() {
        concurrent_migrations_on_a_fresh_postgres_database().await;
    }
}

async fn concurrent_migrations_on_a_fresh_postgres_database() {
    use sqlx::Connection;
    let server = tributary_store::testing::postgres_server_url();
    let name = format!("tributary_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .expect("TRIBUTARY_TEST_DATABASE_URL is unreachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(&server).unwrap();
    url.set_path(&format!("/{name}"));
    let url = url.to_string();

    let opened = futures::future::join_all((0..4).map(|_| tributary_store::open(&url))).await;
    let stores: Vec<_> = opened.into_iter().map(|s| s.unwrap()).collect();
    for store in &stores {
        assert_eq!(store.count_records("country").await.unwrap(), 0);
    }
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM tributary_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3, 10, 14, 16, 17, 18, 19]);
    drop(conn);
    drop(stores);
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
