//! `order_by` per AIP-132: `"entity.population desc, id"`. Ties are broken by key, so the order
//! is total and keyset pagination is exact.

use super::field::Field;
use crate::{Error, Result, Violation};

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: Field,
    pub descending: bool,
}

/// Parses `order_by`; the result always ends with `key` (ascending) unless `key` is named, and
/// nothing after `key` is kept (the key is unique, so later keys never decide anything).
pub(super) fn parse(text: &str) -> Result<Vec<SortKey>> {
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
