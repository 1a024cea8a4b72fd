//! One page of `/mcp/calls` in two passes.
//!
//! Sorting every matching call with all the columns a page shows means decoding those columns
//! for every match (10M calls: ~1.5 s a request). The first pass sorts only the cheap key
//! columns (time, node, connection, index) and keeps the page's keys; the second reads the
//! page's calls in full, found by connection id and time range (row groups and pages outside
//! are pruned by statistics), and puts them in the first pass's order.

use std::collections::HashMap;

use datafusion::{
    arrow::{
        array::{AsArray as _, RecordBatch},
        compute::cast,
        datatypes::{DataType, TimestampNanosecondType, UInt32Type, UInt64Type},
    },
    common::ScalarValue,
    dataframe::DataFrame,
    error::DataFusionError,
    logical_expr::{SortExpr, col, lit},
};
use serde_json::Value;

/// The order of a page.
#[derive(Clone, Copy, Debug)]
pub enum Order {
    /// Oldest first.
    Time,
    /// Longest `elapsed_time` first (calls without one last).
    Slowest,
}

impl Order {
    /// Parses the `order` parameter.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "time" => Some(Self::Time),
            "slowest" => Some(Self::Slowest),
            _ => None,
        }
    }

    /// Sort keys: a total order, since `(node, conn_id, index)` names one call.
    fn keys(self) -> Vec<SortExpr> {
        let tie = [
            col("node").sort(true, false),
            col("conn_id").sort(true, false),
            col("index").sort(true, false),
        ];
        let mut keys = match self {
            Self::Time => vec![col("timestamp").sort(true, false)],
            Self::Slowest => vec![
                col("elapsed_time").sort(false, false),
                col("timestamp").sort(true, false),
            ],
        };
        keys.extend(tie);
        keys
    }
}

/// The calls of one page as JSON rows, in `order`, skipping `offset` matches of `df`.
/// `shape` selects the columns of the second pass; `to_json` turns its batches into rows.
pub async fn page(
    df: DataFrame,
    order: Order,
    offset: usize,
    limit: usize,
    shape: impl FnOnce(DataFrame) -> Result<DataFrame, DataFusionError>,
    to_json: impl FnOnce(&[RecordBatch]) -> Vec<Value>,
) -> Result<Vec<Value>, DataFusionError> {
    let keys = df
        .clone()
        .select_columns(&["timestamp", "elapsed_time", "node", "conn_id", "index"])?
        .sort(order.keys())?
        .limit(offset, Some(limit))?
        .collect()
        .await?;
    let mut ids = Vec::new();
    let mut conn_ids = Vec::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for b in &keys {
        let node = cast(b.column(2), &DataType::Utf8)?;
        let node = node.as_string::<i32>();
        let conn = b.column(3).as_primitive_opt::<UInt64Type>();
        let index = b.column(4).as_primitive_opt::<UInt32Type>();
        let ts = b.column(0).as_primitive_opt::<TimestampNanosecondType>();
        let (Some(conn), Some(index), Some(ts)) = (conn, index, ts) else {
            return Err(DataFusionError::Execution(
                "calls table without conn_id, index or timestamp columns".into(),
            ));
        };
        for r in 0..b.num_rows() {
            let mut id = String::new();
            remora_tables::calls::write_call_id(
                &mut id,
                node.value(r),
                conn.value(r),
                index.value(r),
            );
            ids.push(id);
            conn_ids.push(conn.value(r));
            first = first.min(ts.value(r));
            last = last.max(ts.value(r));
        }
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    conn_ids.sort_unstable();
    conn_ids.dedup();
    let at = |ns: i64| {
        lit(ScalarValue::TimestampNanosecond(
            Some(ns),
            Some("UTC".into()),
        ))
    };
    let found = df.filter(
        col("conn_id")
            .in_list(conn_ids.into_iter().map(lit).collect(), false)
            .and(col("timestamp").between(at(first), at(last))),
    )?;
    let batches = shape(found)?.collect().await?;
    let mut by_id: HashMap<String, Value> = to_json(&batches)
        .into_iter()
        .filter_map(|row| Some((row.get("id")?.as_str()?.to_owned(), row)))
        .collect();
    // Every key of the first pass is in the second (same filter, a wider one around it): a
    // missing row would shift every later page, so it is an error, not a shorter page.
    ids.into_iter()
        .map(|id| {
            by_id.remove(&id).ok_or_else(|| {
                DataFusionError::Internal(format!("call {id} of the page was not found again"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::{
        arrow::{
            array::{Int64Array, StringArray, TimestampNanosecondArray, UInt32Array, UInt64Array},
            datatypes::{Field, Schema, TimeUnit},
        },
        prelude::SessionContext,
    };

    use super::*;

    /// 40 calls over 4 connections with many equal timestamps and elapsed times.
    fn table() -> RecordBatch {
        let n = 40u64;
        let conn: Vec<u64> = (0..n).map(|i| i % 4).collect();
        let index: Vec<u32> = (0..n).map(|i| (i / 4) as u32).collect();
        let ts: Vec<i64> = (0..n).map(|i| 1_000 + (i as i64 % 7) * 10).collect();
        let elapsed: Vec<Option<i64>> = (0..n)
            .map(|i| (i % 5 != 0).then_some((i as i64 * 37) % 11))
            .collect();
        let ids: Vec<String> = (0..n as usize)
            .map(|i| format!("n1/{}/{}", conn[i], index[i]))
            .collect();
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("elapsed_time", DataType::Int64, true),
            Field::new("node", DataType::Utf8, false),
            Field::new("conn_id", DataType::UInt64, false),
            Field::new("index", DataType::UInt32, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(TimestampNanosecondArray::from(ts).with_timezone("UTC")),
                Arc::new(Int64Array::from(elapsed)),
                Arc::new(StringArray::from(vec!["n1"; n as usize])),
                Arc::new(UInt64Array::from(conn)),
                Arc::new(UInt32Array::from(index)),
            ],
        )
        .unwrap()
    }

    fn ids(rows: &[Value]) -> Vec<String> {
        rows.iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Walking pages of any size gives exactly the one-pass sort, for both orders.
    #[tokio::test]
    async fn pages_follow_the_full_sort_across_ties() {
        let ctx = SessionContext::new();
        let df = ctx.read_batch(table()).unwrap();
        let json = |b: &[RecordBatch]| super::super::json::rows(b, false, 64);
        for order in [Order::Time, Order::Slowest] {
            let whole = df
                .clone()
                .sort(order.keys())
                .unwrap()
                .collect()
                .await
                .unwrap();
            let expected = ids(&json(&whole));
            assert_eq!(expected.len(), 40);
            for size in [1, 3, 7, 40] {
                let mut walked = Vec::new();
                let mut offset = 0;
                loop {
                    let rows = page(df.clone(), order, offset, size, Ok, json)
                        .await
                        .unwrap();
                    if rows.is_empty() {
                        break;
                    }
                    offset += rows.len();
                    walked.extend(ids(&rows));
                }
                assert_eq!(walked, expected, "{order:?}, pages of {size}");
            }
        }
    }
}
