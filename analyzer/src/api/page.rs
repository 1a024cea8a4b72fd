//! One page of `/mcp/calls`, and the number of matches.
//!
//! Sorting every matching call with all the columns a page shows means decoding those columns
//! for every match (10M calls: ~1.5 s a request). So:
//!
//! 1. The total is a count, which decodes only the filter's columns (10M calls: ~20 ms).
//! 2. The page's keys (time, latency, node, connection, index) come from a scan that keeps the
//!    first `offset + limit` in a bounded heap per partition. In time order the scan stops
//!    early: calls are written in time order, so the row groups' time ranges say below which
//!    time enough calls lie; the scan reads only up to there (row groups and pages past it are
//!    pruned by statistics), and if it finds fewer matches than the page needs, it widens the
//!    bound and tries again. A bound is only ever used when at least a page of matches lies
//!    under it, which makes it exact whatever the order of the file: any later call sorts
//!    after all of them.
//! 3. The page's calls are read in full, found by connection id and time range, and put in the
//!    order of step 2.

use std::{collections::HashMap, sync::Arc};

use datafusion::{
    arrow::{
        array::{Array as _, ArrayRef, AsArray as _, RecordBatch},
        compute::cast,
        datatypes::{DataType, Int64Type, TimestampNanosecondType, UInt32Type, UInt64Type},
    },
    common::ScalarValue,
    dataframe::DataFrame,
    error::DataFusionError,
    execution::SendableRecordBatchStream,
    logical_expr::{SortExpr, col, lit},
};
use futures_util::StreamExt as _;
use serde_json::Value;

pub use crate::services::query::TimeSpan;

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

    /// Sort keys: a total order, since `(node, conn_id, index)` names one call. [`SortKey`]
    /// orders the same way.
    #[cfg_attr(not(test), allow(dead_code))]
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

/// One call's place in the order: ascending tuples, as [`Order::keys`] sorts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    /// 0 for time order; for the slowest first, the negated latency, missing ones last.
    primary: i64,
    ts: i64,
    node: Arc<str>,
    conn: u64,
    index: u32,
}

/// A time at or below which about `want` rows lie, by the spans (interpolating inside the
/// span where `want` is reached); `None` when that takes every row.
fn time_bound(spans: &[TimeSpan], want: u64) -> Option<i64> {
    let mut by_start = spans.to_vec();
    by_start.sort_by_key(|s| s.min);
    let last = by_start.iter().map(|s| s.max).max()?;
    let (mut rows, mut covered) = (0u64, i64::MIN);
    for span in &by_start {
        if rows + span.rows >= want {
            let share = (want - rows) as f64 / span.rows.max(1) as f64;
            let inside = span.min + ((span.max - span.min) as f64 * share) as i64;
            let bound = covered.max(inside);
            return (bound < last).then_some(bound);
        }
        rows += span.rows;
        covered = covered.max(span.max);
    }
    None
}

/// Scans `df`'s keys on every partition: the number of rows and the `k` first in `order`.
async fn keys(
    df: DataFrame,
    order: Order,
    k: usize,
) -> Result<(usize, Vec<SortKey>), DataFusionError> {
    let streams = df
        .select_columns(&["timestamp", "elapsed_time", "node", "conn_id", "index"])?
        .execute_stream_partitioned()
        .await?;
    // One task per partition, so the partitions are scanned on every core.
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(scan_keys(stream, order, k)))
        .collect();
    let mut total = 0;
    let mut found = Vec::new();
    for task in tasks {
        let (n, mut part) = task
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        total += n;
        found.append(&mut part);
    }
    Ok((total, found))
}

/// The number of matches and the `k` first keys in `order`, reading as little as the order and
/// the file's `spans` allow.
async fn total_and_keys(
    df: &DataFrame,
    order: Order,
    k: usize,
    spans: &[TimeSpan],
) -> Result<(usize, Vec<SortKey>), DataFusionError> {
    if !matches!(order, Order::Time) || spans.is_empty() || k == 0 {
        return keys(df.clone(), order, k).await;
    }
    let total = df.clone().count().await?;
    if total == 0 {
        return Ok((0, Vec::new()));
    }
    let rows: u64 = spans.iter().map(|s| s.rows).sum();
    // Twice the rows the filter's selectivity says a page needs, then 8x more each time.
    let mut want = ((k as f64) * (rows as f64) / (total as f64) * 2.0).ceil() as u64;
    while let Some(bound) = time_bound(spans, want) {
        let at = lit(ScalarValue::TimestampNanosecond(
            Some(bound),
            Some("UTC".into()),
        ));
        let (n, found) = keys(df.clone().filter(col("timestamp").lt_eq(at))?, order, k).await?;
        if n >= k || n == total {
            return Ok((total, found));
        }
        want = want.saturating_mul(8);
    }
    let (_, found) = keys(df.clone(), order, k).await?;
    Ok((total, found))
}

/// Counts the rows of `stream` and keeps the `k` first of them in `order`.
async fn scan_keys(
    mut stream: SendableRecordBatchStream,
    order: Order,
    k: usize,
) -> Result<(usize, Vec<SortKey>), DataFusionError> {
    let mut heap: std::collections::BinaryHeap<SortKey> = std::collections::BinaryHeap::new();
    let mut count = 0;
    let mut last_node: Option<Arc<str>> = None;
    while let Some(batch) = stream.next().await {
        let b = batch?;
        count += b.num_rows();
        if k == 0 {
            continue;
        }
        let ts = b.column(0).as_primitive_opt::<TimestampNanosecondType>();
        let elapsed = b.column(1).as_primitive_opt::<Int64Type>();
        let conn = b.column(3).as_primitive_opt::<UInt64Type>();
        let index = b.column(4).as_primitive_opt::<UInt32Type>();
        let (Some(ts), Some(elapsed), Some(conn), Some(index)) = (ts, elapsed, conn, index) else {
            return Err(DataFusionError::Execution(
                "calls table without timestamp, elapsed_time, conn_id or index columns".into(),
            ));
        };
        // Nodes are decoded only for a batch that has a row worth keeping.
        let mut nodes: Option<ArrayRef> = None;
        for r in 0..b.num_rows() {
            let primary = match order {
                Order::Time => 0,
                Order::Slowest if elapsed.is_null(r) => i64::MAX,
                Order::Slowest => elapsed.value(r).checked_neg().unwrap_or(i64::MAX),
            };
            let t = ts.value(r);
            if heap.len() == k
                && let Some(top) = heap.peek()
                && (primary, t) > (top.primary, top.ts)
            {
                continue;
            }
            if nodes.is_none() {
                nodes = Some(cast(b.column(2), &DataType::Utf8)?);
            }
            let name = nodes.as_ref().map_or("", |n| n.as_string::<i32>().value(r));
            let node = match &last_node {
                Some(n) if &**n == name => n.clone(),
                _ => {
                    let n: Arc<str> = Arc::from(name);
                    last_node = Some(n.clone());
                    n
                }
            };
            let key = SortKey {
                primary,
                ts: t,
                node,
                conn: conn.value(r),
                index: index.value(r),
            };
            if heap.len() < k {
                heap.push(key);
            } else if heap.peek().is_some_and(|top| key < *top) {
                heap.pop();
                heap.push(key);
            }
        }
    }
    Ok((count, heap.into_vec()))
}

/// The calls of one page as JSON rows, in `order`, skipping `offset` matches of `df`, and the
/// number of matches. `spans` are the row groups of the file (empty when unknown); `shape`
/// selects the columns of the last pass; `to_json` turns its batches into rows.
pub async fn page(
    df: DataFrame,
    order: Order,
    offset: usize,
    limit: usize,
    spans: &[TimeSpan],
    shape: impl FnOnce(DataFrame) -> Result<DataFrame, DataFusionError>,
    to_json: impl FnOnce(&[RecordBatch]) -> Vec<Value>,
) -> Result<(Vec<Value>, usize), DataFusionError> {
    let k = offset.saturating_add(limit);
    let (total, mut keys) = total_and_keys(&df, order, k, spans).await?;
    keys.sort_unstable();
    let mut ids = Vec::new();
    let mut conn_ids = Vec::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for key in keys.iter().skip(offset).take(limit) {
        let mut id = String::new();
        remora_tables::calls::write_call_id(&mut id, &key.node, key.conn, key.index);
        ids.push(id);
        conn_ids.push(key.conn);
        first = first.min(key.ts);
        last = last.max(key.ts);
    }
    if ids.is_empty() {
        return Ok((Vec::new(), total));
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
    let rows = ids
        .into_iter()
        .map(|id| {
            by_id.remove(&id).ok_or_else(|| {
                DataFusionError::Internal(format!("call {id} of the page was not found again"))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((rows, total))
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
            // No spans (a full scan); true ones; and ones that claim the rows are in time
            // order, which they are not: the bound is too low and must be widened.
            let true_span = [TimeSpan {
                min: 1000,
                max: 1060,
                rows: 40,
            }];
            let halves = [
                TimeSpan {
                    min: 1000,
                    max: 1020,
                    rows: 20,
                },
                TimeSpan {
                    min: 1020,
                    max: 1060,
                    rows: 20,
                },
            ];
            for (spans, size) in [&[][..], &true_span[..], &halves[..]]
                .into_iter()
                .flat_map(|s| [1, 3, 7, 40].map(|n| (s, n)))
            {
                let mut walked = Vec::new();
                let mut offset = 0;
                loop {
                    let (rows, total) = page(df.clone(), order, offset, size, spans, Ok, json)
                        .await
                        .unwrap();
                    assert_eq!(total, 40);
                    if rows.is_empty() {
                        break;
                    }
                    offset += rows.len();
                    walked.extend(ids(&rows));
                }
                assert_eq!(walked, expected, "{order:?}, pages of {size}, {spans:?}");
            }
        }
    }
}
