//! The record rules of SPEC.md §1: what makes a contributed record valid, and its prepared form.

use crate::checksum::{canonical_json, record_checksum};
use crate::ids::record_key;
use crate::model::{DigestState, Outcome, WritePolicy};
use crate::schema::EntitySchema;
use crate::text::{json_has_nul, NUL_PROBLEM};
use crate::{Error, Result, Violation};
use serde_json::Value;

/// A record as a connector sent it, before validation.
#[derive(Debug, Clone, Default)]
pub struct RecordInput {
    pub id: String,
    pub name: String,
    /// `None` when the field was absent.
    pub entity: Option<Value>,
    /// `None` when absent, which means `{}`.
    pub instance: Option<Value>,
    /// Empty when the contributor supplied none.
    pub checksum: String,
}

/// A valid record ready to store: canonical JSON text, key and checksum computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRecord {
    pub id: String,
    pub key: String,
    pub name: String,
    /// Canonical JSON text of the entity object.
    pub entity: String,
    /// Canonical JSON text of the instance object (`{}` when absent).
    pub instance: String,
    pub checksum: String,
}

/// An id to delete, with its record key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedId {
    pub id: String,
    pub key: String,
}

/// A digest to compare, with its record key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedDigest {
    pub id: String,
    pub key: String,
    pub checksum: String,
}

/// Where a batch's records belong: their entity type and connector.
#[derive(Debug, Clone, Copy)]
pub struct RecordOwner<'a> {
    pub entity_type: &'a str,
    pub connector: &'a str,
}

/// Checks an id (or name) is 1..64 Unicode scalar values. `field` names it in a violation; it
/// is built only for one (every record of every batch passes through here).
fn check_text(field: impl FnOnce() -> String, value: &str, what: &str, out: &mut Vec<Violation>) {
    if value.contains('\0') {
        out.push(Violation::new(field(), NUL_PROBLEM));
        return;
    }
    let chars = value.chars().count();
    if chars == 0 {
        out.push(Violation::new(
            field(),
            format!("{what} is required (1..64 characters)"),
        ));
    } else if chars > 64 {
        out.push(Violation::new(
            field(),
            format!("{what} is {chars} characters long; at most 64 are allowed"),
        ));
    }
}

/// Validates a whole batch. Either every record is valid and all are returned prepared, or
/// `InvalidArgument` lists every violation of every record (the batch is atomic).
pub fn prepare_batch(
    owner: RecordOwner<'_>,
    schema: &EntitySchema,
    max_record_bytes: usize,
    records: Vec<RecordInput>,
) -> Result<Vec<PreparedRecord>> {
    let mut violations = Vec::new();
    let mut prepared = Vec::with_capacity(records.len());
    for (index, record) in records.into_iter().enumerate() {
        if let Some(p) = prepare_one(
            owner,
            schema,
            max_record_bytes,
            index,
            record,
            &mut violations,
        )? {
            prepared.push(p);
        }
    }
    if violations.is_empty() {
        Ok(prepared)
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

fn prepare_one(
    owner: RecordOwner<'_>,
    schema: &EntitySchema,
    max_record_bytes: usize,
    index: usize,
    record: RecordInput,
    violations: &mut Vec<Violation>,
) -> Result<Option<PreparedRecord>> {
    let before = violations.len();
    let at = |field: &str| format!("records[{index}].{field}");
    let label = |field: &str| {
        if record.id.is_empty() {
            at(field)
        } else {
            format!("{} (id {:?})", at(field), shown_id(&record.id))
        }
    };
    // Labels are built only for a violation: every record of every batch passes here.
    check_text(|| label("id"), &record.id, "id", violations);
    check_text(|| label("name"), &record.name, "name", violations);
    if record.checksum.contains('\0') {
        violations.push(Violation::new(label("checksum"), NUL_PROBLEM));
    }
    let checksum_chars = record.checksum.chars().count();
    if checksum_chars > 128 {
        violations.push(Violation::new(
            label("checksum"),
            format!("checksum is {checksum_chars} characters long; at most 128 are allowed"),
        ));
    }
    match &record.entity {
        None => violations.push(Violation::new(label("entity"), "entity is required")),
        // A valid entity (the common case) is answered without collecting errors.
        Some(entity @ Value::Object(_)) if schema.is_valid(entity) => {}
        Some(entity @ Value::Object(_)) => {
            let mut schema_violations = Vec::new();
            schema.violations(&at("entity"), entity, &mut schema_violations);
            for v in schema_violations {
                violations.push(Violation::new(with_id(&v.field, &record.id), v.description));
            }
        }
        Some(_) => violations.push(Violation::new(
            label("entity"),
            "entity must be a JSON object",
        )),
    }
    if record.entity.as_ref().is_some_and(json_has_nul) {
        violations.push(Violation::new(label("entity"), NUL_PROBLEM));
    }
    if let Some(instance) = &record.instance {
        if json_has_nul(instance) {
            violations.push(Violation::new(label("instance"), NUL_PROBLEM));
        }
        if !instance.is_object() {
            violations.push(Violation::new(
                label("instance"),
                "instance must be a JSON object",
            ));
        }
    }
    if violations.len() > before {
        return Ok(None);
    }
    let entity = canonical_json(record.entity.as_ref().unwrap_or(&Value::Null))?;
    let instance = match &record.instance {
        Some(v) => canonical_json(v)?,
        None => "{}".to_owned(),
    };
    let size =
        record.id.len() + record.name.len() + entity.len() + instance.len() + record.checksum.len();
    if size > max_record_bytes {
        violations.push(Violation::new(
            label("record"),
            format!("record is {size} bytes; at most {max_record_bytes} are allowed"),
        ));
        return Ok(None);
    }
    let checksum = if record.checksum.is_empty() {
        record_checksum(&record.name, &entity, &instance)
    } else {
        record.checksum
    };
    Ok(Some(PreparedRecord {
        key: record_key(owner.entity_type, owner.connector, &record.id),
        id: record.id,
        name: record.name,
        entity,
        instance,
        checksum,
    }))
}

/// An id as violations echo it: at most 64 characters (longer ids are what is wrong).
fn shown_id(id: &str) -> String {
    match id.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &id[..end]),
        None => id.to_owned(),
    }
}

/// `records[3].entity.population` plus the record's id, so a reader can find the record.
fn with_id(field: &str, id: &str) -> String {
    if id.is_empty() {
        field.to_owned()
    } else {
        format!("{field} (id {:?})", shown_id(id))
    }
}

/// Validates a batch of ids to delete: every id 1..64 characters.
pub fn check_delete_ids(ids: &[String]) -> Result<()> {
    let mut violations = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        check_text(|| format!("ids[{index}]"), id, "id", &mut violations);
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

/// A digest as a connector sent it: an external id and the checksum of its current record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestInput {
    pub id: String,
    pub checksum: String,
}

/// Validates a batch of digests: every id 1..64 and every checksum 1..128 characters, one
/// violation per problem (`digests[3].checksum`); the batch is atomic like any other.
pub fn check_digests(digests: &[DigestInput]) -> Result<()> {
    let mut violations = Vec::new();
    for (index, digest) in digests.iter().enumerate() {
        check_text(
            || format!("digests[{index}].id"),
            &digest.id,
            "id",
            &mut violations,
        );
        let chars = digest.checksum.chars().count();
        if digest.checksum.contains('\0') {
            violations.push(Violation::new(
                format!("digests[{index}].checksum"),
                crate::text::NUL_PROBLEM,
            ));
        } else if chars == 0 {
            violations.push(Violation::new(
                format!("digests[{index}].checksum"),
                "checksum is required (1..128 characters)",
            ));
        } else if chars > 128 {
            violations.push(Violation::new(
                format!("digests[{index}].checksum"),
                format!("checksum is {chars} characters long; at most 128 are allowed"),
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

/// The state of each digest against what the store holds (`existing`, by key): no visible record
/// is `new`, another checksum `changed`, the same checksum `unchanged`.
pub fn plan_digests(
    digests: &[KeyedDigest],
    existing: &std::collections::HashMap<String, ExistingRecord>,
) -> Vec<DigestState> {
    digests
        .iter()
        .map(|d| match existing.get(&d.key) {
            None => DigestState::New,
            Some(e) if e.checksum == d.checksum => DigestState::Unchanged,
            Some(_) => DigestState::Changed,
        })
        .collect()
}

/// What the visible catalog holds for a key, as far as deciding an upsert's outcome goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingRecord {
    pub checksum: String,
    pub edited: bool,
}

/// The outcome of upserting a record with `checksum` over `existing` under `policy`.
/// Unchanged wins over the policy: a same-checksum record is never rewritten nor skipped.
pub fn upsert_outcome(
    existing: Option<&ExistingRecord>,
    checksum: &str,
    policy: WritePolicy,
) -> Outcome {
    match existing {
        None => Outcome::Created,
        Some(e) if e.checksum == checksum => Outcome::Unchanged,
        Some(e) => match policy {
            WritePolicy::Importer => Outcome::Updated,
            WritePolicy::ImporterCreateOnly => Outcome::Skipped,
            WritePolicy::ImporterUpdateUnlessEdited if e.edited => Outcome::Skipped,
            WritePolicy::ImporterUpdateUnlessEdited => Outcome::Updated,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> EntitySchema {
        EntitySchema::compile(&json!({
            "type": "object",
            "properties": {"population": {"type": "integer"}},
            "required": ["population"]
        }))
        .unwrap()
    }

    const OWNER: RecordOwner<'static> = RecordOwner {
        entity_type: "country",
        connector: "c1",
    };

    fn input(id: &str, entity: Value) -> RecordInput {
        RecordInput {
            id: id.into(),
            name: "Name".into(),
            entity: Some(entity),
            instance: None,
            checksum: String::new(),
        }
    }

    #[test]
    fn an_invalid_record_rejects_the_whole_batch_with_every_violation() {
        let records = vec![
            input("GB", json!({"population": 1})),
            input("", json!({"population": "x"})),
            RecordInput {
                name: "x".repeat(65),
                ..input("FR", json!({}))
            },
        ];
        let Err(Error::InvalidArgument(v)) = prepare_batch(OWNER, &schema(), 1 << 20, records)
        else {
            panic!("expected InvalidArgument");
        };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert!(fields.contains(&"records[1].id"), "{fields:?}");
        assert!(
            fields.contains(&"records[1].entity.population"),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"records[2].name (id \"FR\")"),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"records[2].entity (id \"FR\")"),
            "{fields:?}"
        );
        assert_eq!(v.len(), 4);
    }

    #[test]
    fn ids_count_unicode_scalar_values() {
        let ok = prepare_batch(
            OWNER,
            &schema(),
            1 << 20,
            vec![input(&"é".repeat(64), json!({"population": 1}))],
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn oversized_records_are_invalid() {
        let r = prepare_batch(
            OWNER,
            &schema(),
            100,
            vec![input("A", json!({"population": 1, "pad": "x".repeat(200)}))],
        );
        assert!(matches!(r, Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn a_supplied_checksum_over_128_characters_is_invalid() {
        let mut r = input("A", json!({"population": 1}));
        r.checksum = "c".repeat(129);
        let Err(Error::InvalidArgument(v)) = prepare_batch(OWNER, &schema(), 1 << 20, vec![r])
        else {
            panic!("expected InvalidArgument");
        };
        assert_eq!(v[0].field, "records[0].checksum (id \"A\")");
    }

    #[test]
    fn supplied_checksum_is_kept() {
        let mut r = input("A", json!({"population": 1}));
        r.checksum = "abc".into();
        let p = prepare_batch(OWNER, &schema(), 1 << 20, vec![r]).unwrap();
        assert_eq!(p[0].checksum, "abc");
        assert_eq!(p[0].instance, "{}");
    }

    #[test]
    fn write_policies_decide_outcomes() {
        let edited = ExistingRecord {
            checksum: "a".into(),
            edited: true,
        };
        assert_eq!(
            upsert_outcome(None, "a", WritePolicy::ImporterCreateOnly),
            Outcome::Created
        );
        assert_eq!(
            upsert_outcome(Some(&edited), "a", WritePolicy::ImporterCreateOnly),
            Outcome::Unchanged
        );
        assert_eq!(
            upsert_outcome(Some(&edited), "b", WritePolicy::ImporterCreateOnly),
            Outcome::Skipped
        );
        assert_eq!(
            upsert_outcome(Some(&edited), "b", WritePolicy::ImporterUpdateUnlessEdited),
            Outcome::Skipped
        );
        assert_eq!(
            upsert_outcome(Some(&edited), "b", WritePolicy::Importer),
            Outcome::Updated
        );
    }
}

/// What to do with an upsert batch: one outcome per record, and which records to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertPlan {
    pub outcomes: Vec<Outcome>,
    /// Indexes (into the batch) of the records to write, at most one per key, ascending. Applied
    /// batches write the last created/updated occurrence of a key; staged batches stage the last
    /// occurrence of every key, unchanged ones included (as a `keep`, so a replace sweep spares
    /// them and a staged operation on the key before is overridden).
    pub writes: Vec<usize>,
}

/// Plans an upsert batch against what the store holds (`existing`, by key).
///
/// Applied batches (stream) judge each record against the state the earlier records of the
/// batch left; staged batches (accrue/replace) judge every record against the visible catalog,
/// because their outcome is what commit will do. Within a batch the last record of a key wins.
pub fn plan_upserts(
    records: &[PreparedRecord],
    existing: &std::collections::HashMap<String, ExistingRecord>,
    policy: WritePolicy,
    applied: bool,
) -> UpsertPlan {
    use std::collections::HashMap;
    // Sized for the batch up front: every record of a staged batch gets an entry.
    let mut running: HashMap<&str, ExistingRecord> =
        HashMap::with_capacity(if applied { records.len() } else { 0 });
    let mut last_write: HashMap<&str, usize> = HashMap::with_capacity(records.len());
    let mut outcomes = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        let current = if applied {
            running
                .get(record.key.as_str())
                .or_else(|| existing.get(&record.key))
        } else {
            existing.get(&record.key)
        };
        let outcome = upsert_outcome(current, &record.checksum, policy);
        let edited = current.is_some_and(|c| c.edited);
        if !applied {
            last_write.insert(&record.key, index);
        } else if matches!(outcome, Outcome::Created | Outcome::Updated) {
            last_write.insert(&record.key, index);
            running.insert(
                &record.key,
                ExistingRecord {
                    checksum: record.checksum.clone(),
                    edited,
                },
            );
        }
        outcomes.push(outcome);
    }
    let mut writes: Vec<usize> = last_write.into_values().collect();
    writes.sort_unstable();
    UpsertPlan { outcomes, writes }
}

/// Outcomes of a delete batch given which keys exist: the first delete of an existing key is
/// `deleted`, any other `not_found`.
pub fn plan_deletes(keys: &[&str], exists: &std::collections::HashSet<String>) -> Vec<Outcome> {
    let mut seen = std::collections::HashSet::new();
    keys.iter()
        .map(|key| {
            if exists.contains(*key) && seen.insert(*key) {
                Outcome::Deleted
            } else {
                Outcome::NotFound
            }
        })
        .collect()
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use std::collections::HashMap;

    fn rec(key: &str, checksum: &str) -> PreparedRecord {
        PreparedRecord {
            id: key.into(),
            key: key.into(),
            name: "n".into(),
            entity: "{}".into(),
            instance: "{}".into(),
            checksum: checksum.into(),
        }
    }

    #[test]
    fn applied_batches_judge_against_earlier_records_of_the_batch() {
        let plan = plan_upserts(
            &[rec("a", "1"), rec("a", "2"), rec("a", "2")],
            &HashMap::new(),
            WritePolicy::Importer,
            true,
        );
        assert_eq!(
            plan.outcomes,
            vec![Outcome::Created, Outcome::Updated, Outcome::Unchanged]
        );
        assert_eq!(plan.writes, vec![1]);
    }

    #[test]
    fn staged_batches_judge_against_the_visible_catalog() {
        let existing = HashMap::from([(
            "a".to_owned(),
            ExistingRecord {
                checksum: "1".into(),
                edited: false,
            },
        )]);
        let plan = plan_upserts(
            &[rec("a", "2"), rec("b", "1")],
            &existing,
            WritePolicy::Importer,
            false,
        );
        assert_eq!(plan.outcomes, vec![Outcome::Updated, Outcome::Created]);
        assert_eq!(plan.writes, vec![0, 1]);
        let plan = plan_upserts(
            &[rec("a", "2"), rec("a", "1")],
            &existing,
            WritePolicy::Importer,
            false,
        );
        assert_eq!(plan.outcomes, vec![Outcome::Updated, Outcome::Unchanged]);
        assert_eq!(
            plan.writes,
            vec![1],
            "the last occurrence is staged, even when unchanged"
        );
    }

    #[test]
    fn a_key_deleted_twice_is_deleted_once() {
        let exists = std::collections::HashSet::from(["a".to_owned()]);
        assert_eq!(
            plan_deletes(&["a", "a", "b"], &exists),
            vec![Outcome::Deleted, Outcome::NotFound, Outcome::NotFound]
        );
    }
}

#[cfg(test)]
mod digest_tests {
    use super::*;
    use std::collections::HashMap;

    fn digest(key: &str, checksum: &str) -> KeyedDigest {
        KeyedDigest {
            id: key.into(),
            key: key.into(),
            checksum: checksum.into(),
        }
    }

    #[test]
    fn digests_are_new_changed_or_unchanged() {
        let existing = HashMap::from([
            (
                "a".to_owned(),
                ExistingRecord {
                    checksum: "1".into(),
                    edited: false,
                },
            ),
            (
                "b".to_owned(),
                ExistingRecord {
                    checksum: "2".into(),
                    edited: true,
                },
            ),
        ]);
        assert_eq!(
            plan_digests(
                &[
                    digest("a", "1"),
                    digest("b", "1"),
                    digest("c", "1"),
                    digest("a", "9")
                ],
                &existing
            ),
            vec![
                DigestState::Unchanged,
                DigestState::Changed,
                DigestState::New,
                DigestState::Changed
            ]
        );
        assert!(plan_digests(&[], &existing).is_empty());
    }

    fn input(id: &str, checksum: &str) -> DigestInput {
        DigestInput {
            id: id.into(),
            checksum: checksum.into(),
        }
    }

    #[test]
    fn digests_are_checked_with_one_violation_per_problem() {
        assert!(
            check_digests(&[input("GB", "abc"), input(&"é".repeat(64), &"x".repeat(128))]).is_ok()
        );
        assert!(check_digests(&[]).is_ok());
        let Err(Error::InvalidArgument(v)) = check_digests(&[
            input("GB", "abc"),
            input("", "abc"),
            input("FR", ""),
            input(&"x".repeat(65), &"y".repeat(129)),
        ]) else {
            panic!("expected InvalidArgument");
        };
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "digests[1].id",
                "digests[2].checksum",
                "digests[3].id",
                "digests[3].checksum"
            ]
        );
    }
}
