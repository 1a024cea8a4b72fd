//! Arrow rows → JSON objects keyed by KFL field names (`src.pod.name`, `status_code`), so a
//! model can turn any value it reads straight into a filter. Zero values are left out unless
//! asked for: a model reads every byte.

use datafusion::arrow::{
    array::{Array, ArrayRef, AsArray, RecordBatch},
    compute::cast,
    datatypes::{DataType, Int64Type, TimeUnit, TimestampNanosecondType, UInt64Type},
};
use serde_json::{Map, Value, json};

/// The KFL name of a `calls` column.
pub fn kfl_name(column: &str) -> &str {
    remora_tables::Table::Calls
        .column(column)
        .map_or(column, |c| c.kfl)
}

fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .map_or_else(
        || ns.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

fn value(array: &ArrayRef, row: usize, body_limit: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Boolean => json!(array.as_boolean().value(row)),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            cast(&array.slice(row, 1), &DataType::Int64).map_or(Value::Null, |a| {
                json!(a.as_primitive::<Int64Type>().value(0))
            })
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            cast(&array.slice(row, 1), &DataType::UInt64).map_or(Value::Null, |a| {
                json!(a.as_primitive::<UInt64Type>().value(0))
            })
        }
        DataType::Float32 | DataType::Float64 => cast(&array.slice(row, 1), &DataType::Float64)
            .map_or(Value::Null, |a| {
                json!(
                    a.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                        .value(0)
                )
            }),
        DataType::Timestamp(_, _) => cast(
            &array.slice(row, 1),
            &DataType::Timestamp(TimeUnit::Nanosecond, None),
        )
        .map_or(Value::Null, |a| {
            json!(rfc3339(
                a.as_primitive::<TimestampNanosecondType>().value(0)
            ))
        }),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let bytes: Vec<u8> = match cast(&array.slice(row, 1), &DataType::Binary) {
                Ok(a) => a.as_binary::<i32>().value(0).to_vec(),
                Err(_) => Vec::new(),
            };
            let cut = bytes.len().min(body_limit);
            let mut text = String::from_utf8_lossy(&bytes[..cut]).into_owned();
            if cut < bytes.len() {
                text.push_str(&format!("… ({} more bytes)", bytes.len() - cut));
            }
            json!(text)
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::ListView(_) => {
            let Ok(list) = cast(
                &array.slice(row, 1),
                &DataType::new_list(DataType::Utf8, true),
            ) else {
                return Value::Null;
            };
            let values = list.as_list::<i32>().value(0);
            Value::Array(
                (0..values.len())
                    .map(|i| value(&values, i, body_limit))
                    .collect(),
            )
        }
        DataType::Map(_, _) => {
            let map = array.as_map();
            let entries = map.value(row);
            let (Ok(keys), Ok(vals)) = (
                cast(entries.column(0), &DataType::Utf8),
                cast(entries.column(1), &DataType::Utf8),
            ) else {
                return Value::Null;
            };
            let (keys, vals) = (keys.as_string::<i32>(), vals.as_string::<i32>());
            let mut out = Map::new();
            for i in 0..keys.len() {
                out.insert(keys.value(i).to_owned(), json!(vals.value(i)));
            }
            Value::Object(out)
        }
        _ => cast(&array.slice(row, 1), &DataType::Utf8)
            .map_or(Value::Null, |a| json!(a.as_string::<i32>().value(0))),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(b) => !b,
    }
}

/// Each row as an object keyed by KFL names; `keep_zero` keeps zero values, bodies are cut at
/// `body_limit` bytes.
pub fn rows(batches: &[RecordBatch], keep_zero: bool, body_limit: usize) -> Vec<Value> {
    rows_named(batches, keep_zero, body_limit, kfl_name)
}

/// [`rows`] with the keys `name` gives each column.
pub fn rows_named(
    batches: &[RecordBatch],
    keep_zero: bool,
    body_limit: usize,
    name: impl Fn(&str) -> &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        for row in 0..b.num_rows() {
            let mut obj = Map::new();
            for (i, field) in schema.fields().iter().enumerate() {
                let v = value(b.column(i), row, body_limit);
                // Ids and positions stay even when zero: they name the row.
                let always = matches!(field.name().as_str(), "id" | "index" | "conn_id");
                if keep_zero || always || !is_zero(&v) {
                    obj.insert(name(field.name()).to_owned(), v);
                }
            }
            out.push(Value::Object(obj));
        }
    }
    out
}
