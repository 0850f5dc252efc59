//! `order_by` per AIP-132: `"entity.population desc, id"`. Ties are broken by key, so the order
//! is total and keyset pagination is exact.

use super::field::Field;
use super::limits::QueryLimits;
use crate::{Error, Result, Violation};

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: Field,
    pub descending: bool,
}

/// Parses `order_by`; the result always ends with `key` (ascending) unless `key` is named, and
/// nothing after `key` is kept (the key is unique, so later keys never decide anything).
pub(super) fn parse(text: &str, limits: &QueryLimits) -> Result<Vec<SortKey>> {
    check_size(text, limits)?;
    let mut order: Vec<SortKey> = Vec::new();
    let mut violations = Vec::new();
    if !text.trim().is_empty() {
        for (i, part) in text.split(',').enumerate() {
            let at = format!("order_by[{i}]");
            let words: Vec<&str> = part.split_whitespace().collect();
            let (name, descending) = match words.as_slice() {
                [name] => (*name, false),
                [name, dir] if dir.eq_ignore_ascii_case("asc") => (*name, false),
                [name, dir] if dir.eq_ignore_ascii_case("desc") => (*name, true),
                _ => {
                    violations.push(Violation::new(
                        at,
                        format!(
                            "{:?} is not `field`, `field asc` or `field desc`",
                            part.trim()
                        ),
                    ));
                    continue;
                }
            };
            match Field::parse(name) {
                Ok(field) if order.iter().any(|k| k.field == field) => {
                    violations.push(Violation::new(at, format!("{name} is named twice")))
                }
                Ok(field) => order.push(SortKey { field, descending }),
                Err(problem) => violations.push(Violation::new(at, problem)),
            }
        }
    }
    if !violations.is_empty() {
        return Err(Error::InvalidArgument(violations));
    }
    match order.iter().position(|k| k.field == Field::Key) {
        Some(at) => order.truncate(at + 1),
        None => order.push(SortKey {
            field: Field::Key,
            descending: false,
        }),
    }
    Ok(order)
}

/// Refuses an `order_by` longer than the limits before anything else is looked at, so the
/// duplicate check below compares at most `max_order_by_fields` fields.
fn check_size(text: &str, limits: &QueryLimits) -> Result<()> {
    if text.len() > limits.max_order_by_bytes {
        return Err(Error::invalid(
            "order_by",
            format!(
                "is {} bytes; at most {} (catalog.max_order_by_bytes)",
                text.len(),
                limits.max_order_by_bytes
            ),
        ));
    }
    let fields = if text.trim().is_empty() {
        0
    } else {
        text.split(',').count()
    };
    if fields > limits.max_order_by_fields {
        return Err(Error::invalid(
            "order_by",
            format!(
                "names {fields} fields; at most {} (catalog.max_order_by_fields)",
                limits.max_order_by_fields
            ),
        ));
    }
    Ok(())
}

/// The order as canonical text, for the listing fingerprint.
pub(super) fn normalized(order: &[SortKey]) -> String {
    order
        .iter()
        .map(|k| {
            format!(
                "{}{}",
                k.field.name(),
                if k.descending { " desc" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<SortKey>> {
        super::parse(text, &QueryLimits::default())
    }

    #[test]
    fn too_many_fields_or_bytes_are_refused_up_front() {
        let nine = (0..9)
            .map(|i| format!("entity.f{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse(&nine).is_err());
        let eight = (0..8)
            .map(|i| format!("entity.f{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse(&eight).is_ok());
        assert!(parse(&",".repeat(50_000)).is_err());
    }

    #[test]
    fn default_is_key_and_key_breaks_ties() {
        assert_eq!(normalized(&parse("").unwrap_or_default()), "key");
        assert_eq!(
            normalized(&parse("entity.population desc, id").unwrap_or_default()),
            "entity.population desc,id,key"
        );
        assert_eq!(
            normalized(&parse(" name  ASC ,key desc, id").unwrap_or_default()),
            "name,key desc"
        );
    }

    #[test]
    fn refuses_bad_orders() {
        for bad in [
            "id sideways",
            "population",
            "id, id",
            "id,",
            "id desc extra",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
