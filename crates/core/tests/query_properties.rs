//! Properties of everything a client sends to the catalog's query language and the record
//! checks, over generated hostile input: parsing never panics, answers a result or
//! `InvalidArgument` with at least one violation, and what it accepts stays within the limits.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{json, Value};
use tributary_core::query::{ListQuery, ListToken, QueryLimits};
use tributary_core::record::{prepare_batch, RecordInput, RecordOwner};
use tributary_core::schema::EntitySchema;
use tributary_core::Error;

fn refused_with_violations<T: std::fmt::Debug>(result: &Result<T, Error>) -> bool {
    match result {
        Ok(_) => true,
        Err(Error::InvalidArgument(violations)) => !violations.is_empty(),
        Err(_) => false,
    }
}

/// JSON shaped like filters, with the operators, fields and hostile scalars mixed in.
fn filter_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!(null)),
        Just(json!(true)),
        Just(json!("nul\u{0}inside")),
        Just(json!(1e308)),
        any::<i64>().prop_map(|i| json!(i)),
        ".{0,12}".prop_map(|s| json!(s)),
    ];
    let key = prop_oneof![
        Just("id"),
        Just("name"),
        Just("entity.a"),
        Just("instance.b.c"),
        Just("updated_at"),
        Just("entity"),
        Just("bogus"),
        Just("$and"),
        Just("$or"),
        Just("$not"),
        Just("$in"),
        Just("$nin"),
        Just("$regex"),
        Just("$gt"),
        Just("$exists"),
        Just("$contains"),
    ];
    leaf.prop_recursive(8, 128, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|pairs| {
                Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_filter_text_is_parsed_or_refused_with_violations(text in "\\PC{0,200}") {
        prop_assert!(refused_with_violations(&ListQuery::parse("t", &text, "")));
    }

    #[test]
    fn filter_shaped_json_is_parsed_or_refused_and_never_holds_nul(value in filter_json()) {
        let result = ListQuery::parse("t", &value.to_string(), "");
        prop_assert!(refused_with_violations(&result));
        if let Ok(query) = result {
            let shown = format!("{:?}", query.filter);
            prop_assert!(!shown.contains("\\0"), "{}", shown);
        }
    }

    #[test]
    fn any_order_by_is_parsed_within_its_limits_or_refused(text in "[a-z_.,\\x00 ]{0,300}") {
        let limits = QueryLimits::default();
        let result = ListQuery::parse_within("t", "", &text, &limits);
        prop_assert!(refused_with_violations(&result));
        if let Ok(query) = result {
            // The named fields plus the key that breaks ties.
            prop_assert!(query.order.len() <= limits.max_order_by_fields + 1);
        }
    }

    #[test]
    fn any_page_token_is_decoded_or_refused(text in "[0-9a-f]{0,600}|\\PC{0,100}") {
        prop_assert!(refused_with_violations(&ListToken::decode(&text, "f", 16 * 1024)));
    }

    #[test]
    fn forged_tokens_with_nul_are_refused(key in "\\PC{0,20}", value in "\\PC{0,20}") {
        let token = json!({"f": "f", "s": 1, "c": {"v": [format!("{value}\u{0}")], "k": key}});
        let text = hex::encode(token.to_string());
        prop_assert!(ListToken::decode(&text, "f", 16 * 1024).is_err());
    }

    #[test]
    fn records_are_prepared_or_refused_and_never_keep_nul(
        id in "\\PC{0,70}|.*\\x00.*",
        name in "\\PC{0,70}|.*\\x00.*",
        checksum in "\\PC{0,130}",
        entity in filter_json(),
    ) {
        let schema = EntitySchema::compile(&json!({"type": "object"})).unwrap();
        let owner = RecordOwner { entity_type: "t", connector: "c" };
        let record = RecordInput {
            id: id.clone(),
            name: name.clone(),
            entity: Some(entity),
            instance: None,
            checksum,
        };
        let result = prepare_batch(owner, &schema, 1 << 20, vec![record]);
        prop_assert!(refused_with_violations(&result));
        if let Ok(prepared) = result {
            prop_assert!(!prepared[0].id.contains('\0') && !prepared[0].name.contains('\0'));
            prop_assert!(!prepared[0].entity.contains("\\u0000"));
        }
    }
}
