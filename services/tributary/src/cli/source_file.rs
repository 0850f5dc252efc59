//! The source definition file (`tributary source create|update --file`, and what `source get
//! --output json` prints): its JSON form, durations, and the names of source kinds.

use prost_types::Struct;
use serde_json::{json, Map, Value};
use tributary_client::pb::admin;
use tributary_grpc::convert::json_to_struct;

use super::output::{object as struct_json, time};

/// The kind of a source as the definition file spells it.
pub fn source_kind_name(kind: admin::SourceKind) -> &'static str {
    match kind {
        admin::SourceKind::Unspecified => "unspecified",
        admin::SourceKind::HttpJson => "http_json",
        admin::SourceKind::Ndjson => "ndjson",
        admin::SourceKind::Feed => "feed",
        admin::SourceKind::Grpc => "grpc",
    }
}

/// A source definition, in the form `source create --file` reads (header values come from the
/// server redacted).
pub fn source_json(s: &admin::Source) -> Value {
    let duration = |d: Option<&prost_types::Duration>| {
        d.map_or(Value::Null, |d| Value::String(duration_text(d)))
    };
    let mut map = serde_json::Map::new();
    map.insert("id".into(), json!(s.id));
    map.insert("connector".into(), json!(s.connector));
    map.insert("name".into(), json!(s.name));
    map.insert("kind".into(), json!(source_kind_name(s.kind())));
    map.insert("config".into(), struct_json(s.config.as_ref()));
    map.insert("mapping".into(), struct_json(s.mapping.as_ref()));
    schedule_fields(s, &mut map);
    map.insert("burst_length".into(), duration(s.burst_length.as_ref()));
    map.insert("burst_interval".into(), duration(s.burst_interval.as_ref()));
    map.insert("rest_length".into(), duration(s.rest_length.as_ref()));
    map.insert(
        "backoff".into(),
        s.backoff.iter().map(|d| duration(Some(d))).collect(),
    );
    map.insert(
        "reject_removals_above_percent".into(),
        json!(s.reject_removals_above_percent),
    );
    map.insert("reject_empty".into(), json!(s.reject_empty));
    map.insert("enabled".into(), json!(s.enabled));
    map.insert("created_at".into(), time(s.created_at.as_ref()));
    map.insert("updated_at".into(), time(s.updated_at.as_ref()));
    Value::Object(map)
}

/// A source definition from its JSON form; the error says which field is wrong.
pub fn parse_source(value: Value) -> Result<admin::Source, String> {
    let Value::Object(map) = value else {
        return Err("a source definition must be a JSON object".into());
    };
    let mut source = admin::Source::default();
    for (field, v) in map {
        let bad = |what: &str| format!("\"{field}\" must be {what}");
        match field.as_str() {
            // Output only: accepted so that `source get --output json` can be edited and sent back.
            "id" | "created_at" | "updated_at" => {}
            "connector" => source.connector = string(&v).ok_or_else(|| bad("a string"))?,
            "name" => source.name = string(&v).ok_or_else(|| bad("a string"))?,
            "kind" => {
                let name = string(&v).ok_or_else(|| bad("a string"))?;
                source.kind = kind_from_name(&name)
                    .ok_or_else(|| bad("one of http_json, ndjson, feed, grpc"))?
                    .into();
            }
            "config" => source.config = Some(object(v).ok_or_else(|| bad("an object"))?),
            "mapping" => source.mapping = Some(object(v).ok_or_else(|| bad("an object"))?),
            "interval" | "cron" if v.is_null() => {}
            "interval" => {
                let d = duration(&v).map_err(|e| bad(&e))?;
                if matches!(source.schedule, Some(admin::source::Schedule::Cron(_))) {
                    return Err("give \"interval\" or \"cron\", not both".into());
                }
                source.schedule = Some(admin::source::Schedule::Interval(d));
            }
            "cron" => {
                let cron = string(&v).ok_or_else(|| bad("a string"))?;
                if matches!(source.schedule, Some(admin::source::Schedule::Interval(_))) {
                    return Err("give \"interval\" or \"cron\", not both".into());
                }
                source.schedule = Some(admin::source::Schedule::Cron(cron));
            }
            "burst_length" | "burst_interval" | "rest_length" if v.is_null() => {}
            "burst_length" => source.burst_length = Some(duration(&v).map_err(|e| bad(&e))?),
            "burst_interval" => source.burst_interval = Some(duration(&v).map_err(|e| bad(&e))?),
            "rest_length" => source.rest_length = Some(duration(&v).map_err(|e| bad(&e))?),
            "backoff" => {
                let list = v.as_array().ok_or_else(|| bad("a list of durations"))?;
                source.backoff = list
                    .iter()
                    .map(duration)
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&format!("a list of durations: {e}")))?;
            }
            "reject_removals_above_percent" if v.is_null() => {}
            "reject_removals_above_percent" => {
                source.reject_removals_above_percent =
                    Some(v.as_f64().ok_or_else(|| bad("a number"))?);
            }
            "reject_empty" if v.is_null() => {}
            "reject_empty" => {
                source.reject_empty = Some(v.as_bool().ok_or_else(|| bad("true or false"))?)
            }
            "enabled" if v.is_null() => {}
            "enabled" => source.enabled = Some(v.as_bool().ok_or_else(|| bad("true or false"))?),
            other => {
                return Err(format!(
                    "unknown field \"{other}\" (see `tributary source --help`)"
                ))
            }
        }
    }
    Ok(source)
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn object(v: Value) -> Option<Struct> {
    match v {
        Value::Object(_) => json_to_struct(v),
        _ => None,
    }
}

/// The kind from its command-line name (`http_json`) or its protobuf name
/// (`SOURCE_KIND_HTTP_JSON`), in any case.
fn kind_from_name(name: &str) -> Option<admin::SourceKind> {
    let upper = name.to_ascii_uppercase().replace('-', "_");
    let short = upper.strip_prefix("SOURCE_KIND_").unwrap_or(&upper);
    match short {
        "HTTP_JSON" => Some(admin::SourceKind::HttpJson),
        "NDJSON" => Some(admin::SourceKind::Ndjson),
        "FEED" => Some(admin::SourceKind::Feed),
        "GRPC" => Some(admin::SourceKind::Grpc),
        _ => None,
    }
}

/// A duration: a number with a unit (ms, s, m, h, d), as in "1.5s" (the protobuf JSON form) or
/// "5m"; a bare number is seconds.
pub fn duration(v: &Value) -> Result<prost_types::Duration, String> {
    let (number, unit_secs) = match v {
        Value::Number(n) => (n.as_f64().unwrap_or(f64::NAN), 1.0),
        Value::String(s) => {
            let s = s.trim();
            let split = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            let (number, unit) = s.split_at(split);
            let unit_secs = match unit.trim() {
                "ms" => 0.001,
                "" | "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86_400.0,
                _ => return Err(format!("a duration such as \"90s\" or \"5m\", not \"{s}\"")),
            };
            let number: f64 = number
                .parse()
                .map_err(|_| format!("a duration such as \"90s\" or \"5m\", not \"{s}\""))?;
            (number, unit_secs)
        }
        other => return Err(format!("a duration such as \"90s\" or \"5m\", not {other}")),
    };
    let secs = number * unit_secs;
    if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
        return Err(format!("a non-negative duration, not {v}"));
    }
    let nanos = (secs * 1e9).round();
    #[allow(clippy::cast_possible_truncation)]
    let (seconds, nanos) = ((nanos / 1e9).trunc() as i64, (nanos % 1e9) as i32);
    Ok(prost_types::Duration { seconds, nanos })
}

/// A duration in the protobuf JSON form, e.g. "90s" or "0.250s".
pub fn duration_text(d: &prost_types::Duration) -> String {
    if d.nanos == 0 {
        format!("{}s", d.seconds)
    } else {
        let frac = format!("{:09}", d.nanos.unsigned_abs());
        format!("{}.{}s", d.seconds, frac.trim_end_matches('0'))
    }
}

/// Adds a source's schedule to its JSON form: `interval` or `cron`, the other null.
pub fn schedule_fields(s: &admin::Source, map: &mut Map<String, Value>) {
    let (interval, cron) = match &s.schedule {
        Some(admin::source::Schedule::Interval(d)) => {
            (Value::String(duration_text(d)), Value::Null)
        }
        Some(admin::source::Schedule::Cron(c)) => (Value::Null, Value::String(c.clone())),
        None => (Value::Null, Value::Null),
    };
    map.insert("interval".into(), interval);
    map.insert("cron".into(), cron);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_parse_in_each_unit_and_print_in_protobuf_form() {
        let d = |v: Value| duration(&v).map(|d| duration_text(&d));
        assert_eq!(d(json!("90s")).unwrap(), "90s");
        assert_eq!(d(json!("1.5s")).unwrap(), "1.5s");
        assert_eq!(d(json!("250ms")).unwrap(), "0.25s");
        assert_eq!(d(json!("5m")).unwrap(), "300s");
        assert_eq!(d(json!("1d")).unwrap(), "86400s");
        assert_eq!(d(json!(3)).unwrap(), "3s");
        assert!(d(json!("soon")).is_err());
        assert!(d(json!("-1s")).is_err());
        assert!(d(json!(true)).is_err());
    }

    #[test]
    fn definitions_round_trip_through_the_output_form() {
        let input = json!({
            "connector": "c1", "name": "n", "kind": "http_json",
            "config": {"url": "http://x/items"}, "mapping": {"id": "/id"},
            "interval": "1h", "backoff": ["1m", "5m"], "enabled": false,
        });
        let source = parse_source(input).unwrap();
        assert_eq!(source.kind(), admin::SourceKind::HttpJson);
        assert_eq!(source.backoff.len(), 2);
        let again = parse_source(source_json(&source)).unwrap();
        assert_eq!(again, source);
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let err = |v: Value| parse_source(v).unwrap_err();
        assert!(err(json!([])).contains("JSON object"));
        assert!(err(json!({"kind": "ftp"})).contains("\"kind\""));
        assert!(err(json!({"config": "x"})).contains("\"config\" must be an object"));
        assert!(err(json!({"interval": "1h", "cron": "* * * * *"})).contains("not both"));
        assert!(err(json!({"url": "x"})).contains("unknown field \"url\""));
    }
}
