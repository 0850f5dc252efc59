//! `grpc.health.v1` follows the database: every service of a process depends on it, so while it
//! cannot be reached they answer NOT_SERVING (a load balancer sends calls elsewhere), and
//! SERVING again once it answers, without a restart.

use std::sync::Arc;
use std::time::Duration;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tributary_core::store::Store;

/// How often the database is asked.
const EVERY: Duration = Duration::from_secs(1);
/// How long one look may take before the database counts as unreachable.
const PATIENCE: Duration = Duration::from_secs(3);

/// Runs until aborted: a tiny read every second, the health statuses of `services` (their
/// gRPC names) and of `""` set on each change.
pub async fn follow_database(
    store: Arc<dyn Store>,
    health: HealthReporter,
    services: Vec<&'static str>,
) {
    let mut serving = true;
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let reachable = matches!(
            tokio::time::timeout(PATIENCE, store.list_entity_types(None, 1)).await,
            Ok(Ok(_))
        );
        if reachable == serving {
            continue;
        }
        serving = reachable;
        let status = if serving {
            tracing::info!("the database answers again: serving");
            ServingStatus::Serving
        } else {
            tracing::warn!("the database does not answer: not serving");
            ServingStatus::NotServing
        };
        for name in &services {
            health.set_service_status(*name, status).await;
        }
        health.set_service_status("", status).await;
    }
}
