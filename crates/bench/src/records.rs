//! The workload: deterministic country records shaped like seed 004's, and the three phases.

use serde_json::{json, Value};
use tributary_grpc::convert::json_to_struct;
use tributary_proto::contribution::v1 as contribution;

/// The entity type every record belongs to.
pub const ENTITY_TYPE: &str = "country";

/// One of the benchmark's three workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Every record is new: accrue session (gRPC) or plain upserts (raw SQL).
    FirstLoad,
    /// The same records again; every one is unchanged.
    Unchanged,
    /// A replace of 90 % of the records (all unchanged); the other 10 % are swept.
    Replace,
}

impl Phase {
    /// All phases, in the order they run (each relies on the previous one's data).
    pub const ALL: [Phase; 3] = [Phase::FirstLoad, Phase::Unchanged, Phase::Replace];

    /// The label printed in the report.
    pub fn label(self) -> &'static str {
        match self {
            Phase::FirstLoad => "first load",
            Phase::Unchanged => "unchanged re-send",
            Phase::Replace => "replace, 10 % removed",
        }
    }

    /// Whether record `i` is sent in this phase: replace leaves out every tenth record.
    pub fn sends(self, i: usize) -> bool {
        self != Phase::Replace || i % 10 != 9
    }

    /// The record indexes this phase sends, in batches of `batch`.
    pub fn batches(self, records: usize, batch: usize) -> Vec<Vec<usize>> {
        let sent: Vec<usize> = (0..records).filter(|&i| self.sends(i)).collect();
        sent.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
    }
}

/// Record `i`'s external id.
pub fn id(i: usize) -> String {
    format!("C{i:06}")
}

/// Record `i`'s name.
pub fn name(i: usize) -> String {
    format!("Country {i:06}")
}

/// Record `i`'s entity, the shape of seed 004's `GB` with id, name and figures varied (~230 bytes
/// as a whole record).
pub fn entity(i: usize) -> Value {
    const CONTINENTS: [&str; 6] = [
        "Africa",
        "Asia",
        "Europe",
        "North America",
        "Oceania",
        "South America",
    ];
    let n = i as u64;
    json!({
        "area": 1_000 + (n * 7_919) % 17_000_000,
        "calling_code": 1 + n % 998,
        "capital": format!("Capital {i:06}"),
        "code": id(i),
        "continent": CONTINENTS[i % CONTINENTS.len()],
        "currency": {"code": "GBP", "name": "Sterling"},
        "population": 10_000 + (n * 104_729) % 1_400_000_000,
    })
}

/// The JSON Schema (draft 2020-12) of the `country` entity.
pub fn schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "area": {"type": "integer"},
            "calling_code": {"type": "integer"},
            "capital": {"type": "string"},
            "code": {"type": "string"},
            "continent": {"type": "string"},
            "currency": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "name": {"type": "string"}}
            },
            "population": {"type": "integer"}
        },
        "required": ["code", "population"]
    })
}

/// Creates the `country` entity type on the server `admin` talks to.
pub async fn create_country_type(admin: &mut crate::server::AdminClient) -> anyhow::Result<()> {
    use anyhow::Context as _;
    admin
        .create_entity_type(tributary_proto::admin::v1::CreateEntityTypeRequest {
            entity_type: Some(tributary_proto::admin::v1::EntityType {
                slug: ENTITY_TYPE.into(),
                name: "Country".into(),
                description: "Benchmark countries, shaped like seed 004".into(),
                schema: json_to_struct(schema()),
                ..Default::default()
            }),
        })
        .await
        .context("CreateEntityType")?;
    Ok(())
}

/// Record `i` as a connector sends it.
pub fn contribution_record(i: usize) -> contribution::Record {
    contribution::Record {
        id: id(i),
        name: name(i),
        entity: json_to_struct(entity(i)),
        instance: None,
        checksum: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_about_230_bytes() {
        let record = json!({"id": id(12_345), "name": name(12_345), "entity": entity(12_345)});
        let len = serde_json::to_string(&record).map(|s| s.len()).unwrap_or(0);
        assert!((200..=260).contains(&len), "{len} bytes");
    }

    #[test]
    fn replace_sends_nine_tenths() {
        let sent: usize = Phase::Replace
            .batches(100_000, 1_000)
            .iter()
            .map(Vec::len)
            .sum();
        assert_eq!(sent, 90_000);
        assert_eq!(Phase::FirstLoad.batches(100_000, 1_000).len(), 100);
    }
}
