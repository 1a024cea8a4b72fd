//! Compiler tests against a schema built like the analyzer's `calls` table: what SQL each
//! filter becomes, and what each mistake is told.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::{CompileOptions, KflError, Table, catalog, compile, explain};

fn calls_schema() -> Schema {
    let map = DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(
                vec![
                    Field::new("keys", DataType::Utf8, false),
                    Field::new("values", DataType::Utf8, true),
                ]
                .into(),
            ),
            false,
        )),
        false,
    );
    let fields: Vec<Field> = catalog::fields(Table::Calls)
        .iter()
        .filter_map(|f| {
            let c = f.column()?;
            let (dt, nullable) = match f.ty {
                crate::FieldType::Bool => (DataType::Boolean, false),
                crate::FieldType::Int if c == "elapsed_time" || c == "grpc_status" => {
                    (DataType::Int64, true)
                }
                crate::FieldType::Int if c == "status_code" => (DataType::UInt16, false),
                crate::FieldType::Int => (DataType::Int64, false),
                crate::FieldType::String if c == "error_type" => (DataType::Utf8, true),
                crate::FieldType::String => (DataType::Utf8, false),
                crate::FieldType::Bytes => (DataType::Binary, false),
                crate::FieldType::Timestamp => (
                    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                    false,
                ),
                crate::FieldType::StringList => (
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    false,
                ),
                crate::FieldType::StringMap => (map.clone(), false),
            };
            Some(Field::new(c, dt, nullable))
        })
        .collect();
    Schema::new(fields)
}

const NOW: i64 = 1_795_000_000_000_000_000;

fn sql(kfl: &str) -> String {
    let schema = calls_schema();
    let options = CompileOptions { now_ns: NOW };
    match compile(kfl, Table::Calls, &schema, &options) {
        Ok(e) => explain(Table::Calls, e.as_ref())
            .unwrap_or_else(|e| format!("UNPARSE {e}"))
            .trim_start_matches("SELECT * FROM calls")
            .trim_start_matches(" WHERE ")
            .to_owned(),
        Err(e) => format!("ERR {e}"),
    }
}

fn err(kfl: &str) -> KflError {
    let schema = calls_schema();
    match compile(kfl, Table::Calls, &schema, &CompileOptions { now_ns: NOW }) {
        Ok(e) => panic!("{kfl} compiled to {e:?}"),
        Err(e) => e,
    }
}

#[test]
fn seed_filters_compile_to_plain_predicates() {
    assert_eq!(
        sql(r#"src.pod contains "frontend""#),
        "src_pod_name LIKE '%frontend%'"
    );
    assert_eq!(
        sql(r#"dst.svc=="frontend""#),
        "(dst_service_name = 'frontend')"
    );
    assert_eq!(sql("response.status==503"), "(status_code = 503)");
    assert_eq!(
        sql(r#"request.path=="/api/v1/checkout" and response.status==503"#),
        // The integer test runs first (order.rs).
        "((status_code = 503) AND (\"path\" = '/api/v1/checkout'))"
    );
    assert_eq!(sql(""), "");
}

#[test]
fn nullable_columns_are_zero_valued_but_prunable() {
    // 0 does not satisfy `> 5000000`: the bare column is compared.
    assert_eq!(sql("elapsed_time > 5000000"), "(elapsed_time > 5000000)");
    // 0 satisfies `< 1000`: absent latencies must match, so the column is coalesced.
    assert_eq!(
        sql("elapsed_time < 1000"),
        "(coalesce(elapsed_time, 0) < 1000)"
    );
    assert_eq!(
        sql(r#"error_type == """#),
        "(coalesce(error_type, '') = '')"
    );
    assert_eq!(
        sql("grpc && grpc_status != 0"),
        "((grpc_status <> 0) AND (protocol = 'gRPC'))"
    );
}

#[test]
fn time_is_folded_to_literals() {
    let s = sql(r#"timestamp > now() - duration("5m")"#);
    assert!(s.starts_with("(\"timestamp\" > CAST('2026-11-18T"), "{s}");
    let s = sql(r#"timestamp >= timestamp("2026-11-24T10:00:00Z")"#);
    assert!(s.contains("2026-11-24T10:00:00"), "{s}");
    // Legacy: integers are unix milliseconds.
    assert_eq!(
        sql("timestamp > 1000"),
        sql(r#"timestamp > timestamp("1970-01-01T00:00:01Z")"#)
    );
}

#[test]
fn maps_lists_and_membership() {
    assert_eq!(
        sql(r#"request.headers["Content-Type"] == "application/json""#),
        "(request_headers.\"content-type\" = 'application/json')"
    );
    assert_eq!(
        sql(r#""Authorization" in request.headers"#),
        "array_has(map_keys(request_headers), 'authorization')"
    );
    assert_eq!(
        sql(r#"dns && "google.com" in dns_questions"#),
        "((protocol = 'DNS') AND array_has(dns_questions, 'google.com'))"
    );
    assert_eq!(
        sql("status_code in [500, 503]"),
        "status_code IN (500, 503)"
    );
    assert_eq!(sql("status_code in []"), "false");
    assert_eq!(sql("503 in [500, 503]"), "true");
}

#[test]
fn string_predicates_use_like_when_they_can() {
    assert_eq!(sql(r#"path.startsWith("/api")"#), "\"path\" LIKE '/api%'");
    assert_eq!(sql(r#"path.endsWith(".js")"#), "\"path\" LIKE '%.js'");
    assert_eq!(sql(r#"path.contains("50%")"#), "contains(\"path\", '50%')");
    assert_eq!(
        sql(r#"url.matches(".*/api/v[0-9]+/.*")"#),
        "(\"url\" ~ '.*/api/v[0-9]+/.*')"
    );
}

#[test]
fn unknown_fields_suggest_the_closest() {
    let e = err(r#"dst.servce.name == "checkout""#);
    match &e {
        KflError::UnknownField {
            detail,
            suggestions,
        } => {
            assert_eq!(
                suggestions.first().map(String::as_str),
                Some("dst.service.name")
            );
            assert!(
                detail.message.contains("did you mean dst.service.name"),
                "{e}"
            );
            assert_eq!(
                detail.excerpt,
                "dst.servce.name == \"checkout\"\n^^^^^^^^^^^^^^^"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn type_errors_name_both_types() {
    let e = err(r#"status_code == "503""#).to_string();
    assert!(
        e.contains("(int)") && e.contains("(string)") && e.contains("without quotes"),
        "{e}"
    );
    let e = err(r#"timestamp > "2026-01-01""#).to_string();
    assert!(e.contains("timestamp(\""), "{e}");
    let e = err("status_code").to_string();
    assert!(e.contains("must be a condition"), "{e}");
    let e = err(r#"dns_questions.contains("x")"#).to_string();
    assert!(e.contains("in dns_questions"), "{e}");
    let e = err(r#"path.matches("(")"#);
    assert_eq!(e.kind(), "regex");
    let e = err(r#"timestamp > now() - duration("5 parsecs")"#);
    assert_eq!(e.kind(), "value");
    let e = err("error_type == null").to_string();
    assert!(e.contains("never null"), "{e}");
    let e = err("http && frobnicate(path)");
    assert_eq!(e.kind(), "unknown_function");
}

#[test]
fn constant_arithmetic_folds_and_division_by_zero_is_zero() {
    assert_eq!(sql("status_code == 500 + 3"), "(status_code = 503)");
    assert_eq!(sql("1 / 0 == 0"), "true");
    let s = sql("request_body_size / response_body_size > 2");
    assert!(s.contains("nullif"), "{s}");
}

#[test]
fn list_macros_become_a_match_count() {
    let s = sql(r#"dns_questions.exists(q, q.endsWith(".internal") || q == "x")"#);
    assert_eq!(
        s,
        "(kfl_count_matches(dns_questions, '(?:\\.internal$)|(?:^x$)') > 0)"
    );
    let e = err(r#"dns_questions.exists(q, size(q) > 3)"#);
    assert_eq!(e.kind(), "unsupported");
}

#[test]
fn errors_have_a_wire_form() {
    let body = err("dst.svc.nam == \"x\"").body();
    assert_eq!(body.kind, "unknown_field");
    assert_eq!(
        body.position.as_ref().map(|p| (p.line, p.column)),
        Some((1, 1))
    );
    assert!(
        body.suggestions.contains(&"dst.service.name".to_owned()),
        "{body:?}"
    );
    let body = err("(a").body();
    assert_eq!(body.kind, "parse");
    assert_eq!(body.position.map(|p| p.column), Some(3));
}
