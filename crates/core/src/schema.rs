//! Entity-type schemas: checking that a schema is valid JSON Schema (draft 2020-12) and caching
//! compiled validators by schema version.

use crate::{Error, Result, Violation};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A compiled entity schema.
pub struct EntitySchema {
    validator: jsonschema::Validator,
}

impl EntitySchema {
    /// Compiles `schema`, refusing anything that is not a valid draft 2020-12 schema. Remote
    /// `$ref`s are never fetched: the crate is built without its resolvers, so they fail here.
    pub fn compile(schema: &Value) -> Result<Self> {
        if !schema.is_object() {
            return Err(Error::invalid("schema", "must be a JSON object"));
        }
        if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
            return Err(Error::invalid(
                pointer_to_field("schema", e.instance_path().as_str()),
                e.to_string(),
            ));
        }
        let validator = jsonschema::draft202012::new(schema)
            .map_err(|e| Error::invalid("schema", e.to_string()))?;
        Ok(Self { validator })
    }

    /// Every violation of `entity`, with fields under `prefix` (e.g. `records[3].entity`).
    pub fn violations(&self, prefix: &str, entity: &Value, out: &mut Vec<Violation>) {
        for error in self.validator.iter_errors(entity) {
            out.push(Violation::new(
                pointer_to_field(prefix, error.instance_path().as_str()),
                error.to_string(),
            ));
        }
    }

    /// Whether `entity` is valid.
    pub fn is_valid(&self, entity: &Value) -> bool {
        self.validator.is_valid(entity)
    }
}

/// Turns a JSON pointer (`/currency/code`, `/tags/0`) into a field path under `prefix`
/// (`records[3].entity.currency.code`, `records[3].entity.tags[0]`).
pub fn pointer_to_field(prefix: &str, pointer: &str) -> String {
    let mut field = prefix.to_owned();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            field.push('[');
            field.push_str(&segment);
            field.push(']');
        } else {
            field.push('.');
            field.push_str(&segment);
        }
    }
    field
}

/// A compiled schema and the schema version it was compiled from.
type VersionedSchema = (u32, Arc<EntitySchema>);

/// Compiled schemas by entity type, valid for one schema version each.
#[derive(Default, Clone)]
pub struct SchemaCache {
    entries: Arc<RwLock<HashMap<String, VersionedSchema>>>,
}

impl SchemaCache {
    /// The cached schema of `slug` if it is at `version`.
    pub fn get(&self, slug: &str, version: u32) -> Option<Arc<EntitySchema>> {
        let entries = self.entries.read().ok()?;
        entries
            .get(slug)
            .filter(|(v, _)| *v == version)
            .map(|(_, s)| s.clone())
    }

    /// Remembers the compiled schema of `slug` at `version`.
    pub fn insert(&self, slug: &str, version: u32, schema: Arc<EntitySchema>) {
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(slug.to_owned(), (version, schema));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_become_dotted_fields() {
        assert_eq!(
            pointer_to_field("records[3].entity", "/population"),
            "records[3].entity.population"
        );
        assert_eq!(
            pointer_to_field("records[0].entity", "/tags/2/x"),
            "records[0].entity.tags[2].x"
        );
        assert_eq!(
            pointer_to_field("records[0].entity", ""),
            "records[0].entity"
        );
    }

    #[test]
    fn invalid_schema_is_refused() {
        assert!(EntitySchema::compile(&json!({"type": "no-such-type"})).is_err());
        assert!(EntitySchema::compile(&json!([1])).is_err());
        assert!(EntitySchema::compile(&json!({"type": "object"})).is_ok());
    }

    #[test]
    fn remote_refs_are_not_fetched() {
        let schema = json!({"$ref": "https://example.com/schema.json"});
        assert!(EntitySchema::compile(&schema).is_err());
    }

    #[test]
    fn violations_name_the_path() {
        let schema = EntitySchema::compile(&json!({
            "type": "object",
            "properties": {"population": {"type": "integer"}},
            "required": ["population"]
        }))
        .unwrap();
        let mut out = Vec::new();
        schema.violations(
            "records[3].entity",
            &json!({"population": "many"}),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].field, "records[3].entity.population");
    }
}
