//! The fields a filter or an order can name.

/// Deepest `entity.a.b.c…` path accepted.
pub const MAX_PATH_DEPTH: usize = 8;
/// Longest path segment accepted.
const MAX_SEGMENT_CHARS: usize = 64;

/// A record field a query can name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// The public record key (what ties are broken by).
    Key,
    /// The connector's external id.
    Id,
    Name,
    /// The connector id.
    Connector,
    /// Last change, microseconds since the epoch.
    UpdatedAt,
    /// A path inside `entity`: object keys, outermost first.
    Entity(Vec<String>),
    /// A path inside `instance`.
    Instance(Vec<String>),
}

/// How a field's values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A text column (byte order).
    Text,
    /// A time column: microseconds, compared as integers.
    Micros,
    /// A value inside a JSON document: any JSON type, compared within its type.
    Json,
}

impl Field {
    /// Parses `id`, `name`, `connector`, `updated_at`, `key`, `entity.<path>`, `instance.<path>`.
    /// Path segments are object keys of 1..64 characters from `A-Z a-z 0-9 _ -`: they are written
    /// into SQL as JSON paths (never values), so this check is what keeps them inert.
    pub fn parse(text: &str) -> Result<Field, String> {
        match text {
            "key" => return Ok(Field::Key),
            "id" => return Ok(Field::Id),
            "name" => return Ok(Field::Name),
            "connector" => return Ok(Field::Connector),
            "updated_at" => return Ok(Field::UpdatedAt),
            "entity" | "instance" => {
                return Err(format!(
                    "{text} needs a path, e.g. {text}.population or {text}.currency.code"
                ))
            }
            _ => {}
        }
        let (root, path) = match text.split_once('.') {
            Some(("entity", path)) => (Field::Entity as fn(Vec<String>) -> Field, path),
            Some(("instance", path)) => (Field::Instance as fn(Vec<String>) -> Field, path),
            _ => {
                return Err(format!(
                    "unknown field {text:?}; expected id, name, connector, updated_at, key, \
                     entity.<path> or instance.<path>"
                ))
            }
        };
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        if segments.len() > MAX_PATH_DEPTH {
            return Err(format!(
                "path {text:?} is deeper than {MAX_PATH_DEPTH} levels"
            ));
        }
        for segment in &segments {
            let valid = !segment.is_empty()
                && segment.chars().count() <= MAX_SEGMENT_CHARS
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(format!(
                    "path segment {segment:?} of {text:?} must be 1..{MAX_SEGMENT_CHARS} characters \
                     of A-Z, a-z, 0-9, '_' or '-'"
                ));
            }
        }
        Ok(root(segments))
    }

    /// How this field's values compare.
    pub fn kind(&self) -> FieldKind {
        match self {
            Field::Key | Field::Id | Field::Name | Field::Connector => FieldKind::Text,
            Field::UpdatedAt => FieldKind::Micros,
            Field::Entity(_) | Field::Instance(_) => FieldKind::Json,
        }
    }

    /// The field as a request names it.
    pub fn name(&self) -> String {
        match self {
            Field::Key => "key".into(),
            Field::Id => "id".into(),
            Field::Name => "name".into(),
            Field::Connector => "connector".into(),
            Field::UpdatedAt => "updated_at".into(),
            Field::Entity(path) => format!("entity.{}", path.join(".")),
            Field::Instance(path) => format!("instance.{}", path.join(".")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_columns_and_paths() {
        assert_eq!(Field::parse("id"), Ok(Field::Id));
        assert_eq!(
            Field::parse("entity.currency.code"),
            Ok(Field::Entity(vec!["currency".into(), "code".into()]))
        );
        assert_eq!(
            Field::parse("instance.x-y_1"),
            Ok(Field::Instance(vec!["x-y_1".into()]))
        );
    }

    #[test]
    fn refuses_unknown_fields_and_unsafe_segments() {
        assert!(Field::parse("population").is_err());
        assert!(Field::parse("entity").is_err());
        assert!(Field::parse("entity.").is_err());
        assert!(Field::parse("entity.a..b").is_err());
        assert!(Field::parse("entity.a'b").is_err());
        assert!(Field::parse("entity.a b").is_err());
        assert!(Field::parse("entity.a.b.c.d.e.f.g.h.i").is_err());
    }
}
