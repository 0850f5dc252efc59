//! Turns a fetched page's items into records: the source's mapping, then the record rules of
//! SPEC.md §1 and the entity type's schema. An item that fails either is reported failed with
//! its data (§6); it never stops the page.

use serde_json::Value;
use tributary_core::model::ImportItem;
use tributary_core::record::{prepare_batch, PreparedRecord, RecordOwner};
use tributary_core::schema::EntitySchema;
use tributary_core::source::{truncate_item_data, Mapping};
use tributary_core::Error;

/// A failed item's report entry.
pub(crate) fn failed_item(id: String, reason: &str, error: String, data: &str) -> ImportItem {
    ImportItem {
        id,
        reason: reason.to_owned(),
        error,
        data: truncate_item_data(data),
    }
}

/// The valid records of `items` and a report entry for each invalid one.
pub(crate) fn prepare_items(
    items: Vec<Value>,
    mapping: &Mapping,
    schema: &EntitySchema,
    owner: RecordOwner<'_>,
    max_record_bytes: usize,
) -> (Vec<PreparedRecord>, Vec<ImportItem>) {
    let mut records = Vec::with_capacity(items.len());
    let mut failed = Vec::new();
    for item in items {
        let input = match mapping.apply(&item) {
            Ok(input) => input,
            Err(error) => {
                failed.push(failed_item(
                    mapping.id_of(&item),
                    "mapping",
                    error,
                    &item.to_string(),
                ));
                continue;
            }
        };
        let id = input.id.clone();
        match prepare_batch(owner, schema, max_record_bytes, vec![input]) {
            Ok(mut prepared) => records.extend(prepared.pop()),
            Err(Error::InvalidArgument(violations)) => {
                let error = violations
                    .iter()
                    .map(|v| {
                        let field = v.field.strip_prefix("records[0].").unwrap_or(&v.field);
                        format!("{field}: {}", v.description)
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                failed.push(failed_item(id, "invalid", error, &item.to_string()));
            }
            Err(other) => failed.push(failed_item(
                id,
                "invalid",
                other.to_string(),
                &item.to_string(),
            )),
        }
    }
    (records, failed)
}
