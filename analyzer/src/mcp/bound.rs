//! Results a model can take in: every tool's answer stays under a byte budget, 20 KB unless
//! the caller asks for more (`max_result_bytes`). MCP clients refuse large results (Claude Code
//! rejects those over 25,000 tokens; a Streamable HTTP event over 1 MiB fails the call), and a
//! model reads every byte it is given.
//!
//! A page of calls is cut at a call boundary and its cursor moved back, so paging still visits
//! every call; anything else has its longest strings shortened, then its longest lists cut,
//! and says so in `result_cut`.

use serde_json::{Value, json};

/// The default budget of one tool result, in bytes of JSON.
pub const DEFAULT_BUDGET: usize = 20_000;
/// The largest budget a caller may ask for.
pub const MAX_BUDGET: usize = 1_000_000;
/// Room kept for the note a cut adds.
const NOTE_ROOM: usize = 300;

/// Bytes of `v` as compact JSON.
pub fn size(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// The budget a caller asked for, within bounds.
pub fn budget(asked: Option<u64>) -> usize {
    asked.map_or(DEFAULT_BUDGET, |b| {
        usize::try_from(b)
            .unwrap_or(MAX_BUDGET)
            .clamp(1_000, MAX_BUDGET)
    })
}

/// Cuts a page of calls (`{calls, total, truncated, next_cursor}`, starting at `offset`) to the
/// calls that fit `budget`, and points `next_cursor` at the first call left out. Returns how
/// many calls were left out.
pub fn page(v: &mut Value, offset: usize, budget: usize) -> usize {
    if size(v) <= budget {
        return 0;
    }
    let Some(calls) = v.get_mut("calls").and_then(Value::as_array_mut) else {
        bound(v, budget);
        return 0;
    };
    let mut calls = std::mem::take(calls);
    // The longest prefix that fits, at least one call.
    let mut used = size(v) + NOTE_ROOM;
    let fit = calls
        .iter()
        .take_while(|call| {
            used += size(call) + 1;
            used <= budget
        })
        .count()
        .max(1);
    let left_out = calls.len().saturating_sub(fit);
    calls.truncate(fit);
    v["calls"] = Value::Array(calls);
    if left_out > 0 {
        v["truncated"] = json!(true);
        v["next_cursor"] = json!((offset + fit).to_string());
        v["result_cut"] = json!(format!(
            "page cut to {fit} calls to stay under {budget} bytes; call again with cursor = \
             next_cursor, ask for fewer columns (format=compact), or raise max_result_bytes"
        ));
    }
    // A single call larger than the budget: shorten its fields.
    bound(v, budget);
    left_out
}

/// Fits any result under `budget`: the longest strings are shortened (each marked with how
/// many bytes it lost), then the longest lists are cut. Returns whether anything was cut.
pub fn bound(v: &mut Value, budget: usize) -> bool {
    if size(v) <= budget {
        return false;
    }
    let mut cut = false;
    for cap in [8192, 2048, 512, 128] {
        if size(v) + NOTE_ROOM <= budget {
            break;
        }
        cut |= shorten_strings(v, cap);
    }
    while size(v) + NOTE_ROOM > budget {
        let excess = size(v) + NOTE_ROOM - budget;
        if !cut_longest_list(v, excess) {
            break;
        }
        cut = true;
    }
    if cut && let Some(object) = v.as_object_mut() {
        object.entry("result_cut").or_insert(json!(format!(
            "long texts shortened and long lists cut to stay under {budget} bytes; narrow the \
             question or raise max_result_bytes"
        )));
    }
    cut
}

/// Shortens every string longer than `cap` bytes; returns whether any was.
fn shorten_strings(v: &mut Value, cap: usize) -> bool {
    match v {
        Value::String(s) if s.len() > cap => {
            let mut end = cap;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            let lost = s.len() - end;
            s.truncate(end);
            s.push_str(&format!("…[{lost} more bytes]"));
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, i| shorten_strings(i, cap) | any),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |any, i| shorten_strings(i, cap) | any),
        _ => false,
    }
}

/// The serialized size of the largest list in `v`, and a path to it.
fn longest_list(v: &Value) -> Option<(usize, Vec<PathStep>)> {
    let here = match v {
        Value::Array(items) if !items.is_empty() => Some((size(v), Vec::new())),
        _ => None,
    };
    let children: Box<dyn Iterator<Item = (PathStep, &Value)>> = match v {
        Value::Array(items) => Box::new(
            items
                .iter()
                .enumerate()
                .map(|(i, c)| (PathStep::Index(i), c)),
        ),
        Value::Object(map) => Box::new(map.iter().map(|(k, c)| (PathStep::Key(k.clone()), c))),
        _ => Box::new(std::iter::empty()),
    };
    children
        .filter_map(|(step, child)| {
            longest_list(child).map(|(n, mut path)| {
                path.insert(0, step);
                (n, path)
            })
        })
        .chain(here)
        .max_by_key(|(n, _)| *n)
}

enum PathStep {
    Index(usize),
    Key(String),
}

/// Drops the tail of the largest list, enough to shed `excess` bytes (at least one element).
fn cut_longest_list(v: &mut Value, excess: usize) -> bool {
    let Some((_, path)) = longest_list(v) else {
        return false;
    };
    let mut target = v;
    for step in path {
        target = match (step, target) {
            (PathStep::Index(i), Value::Array(items)) => match items.get_mut(i) {
                Some(t) => t,
                None => return false,
            },
            (PathStep::Key(k), Value::Object(map)) => match map.get_mut(&k) {
                Some(t) => t,
                None => return false,
            },
            _ => return false,
        };
    }
    let Value::Array(items) = target else {
        return false;
    };
    let mut shed = 0;
    while let Some(last) = items.pop() {
        shed += size(&last) + 1;
        if shed >= excess || items.is_empty() {
            break;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_results_are_untouched() {
        let mut v = json!({"calls": [{"id": "a"}], "total": 1});
        let before = v.clone();
        assert_eq!(page(&mut v, 0, DEFAULT_BUDGET), 0);
        assert!(!bound(&mut v, DEFAULT_BUDGET));
        assert_eq!(v, before);
    }

    #[test]
    fn a_page_is_cut_at_a_call_and_its_cursor_moved_back() {
        let calls: Vec<Value> = (0..500)
            .map(|i| json!({"id": format!("n/{i}/0"), "path": "/api/v1/items", "status_code": 200}))
            .collect();
        let mut v = json!({"calls": calls, "total": 900, "truncated": true, "next_cursor": "600"});
        let left_out = page(&mut v, 100, 5_000);
        let kept = v["calls"].as_array().map_or(0, Vec::len);
        assert!(size(&v) <= 5_000, "{}", size(&v));
        assert!(kept > 0 && kept + left_out == 500);
        assert_eq!(v["next_cursor"], json!((100 + kept).to_string()));
        assert_eq!(
            v["calls"][kept - 1]["id"],
            json!(format!("n/{}/0", kept - 1))
        );
        assert_eq!(v["truncated"], json!(true));
    }

    #[test]
    fn one_huge_call_is_shortened_not_dropped() {
        let big = "x".repeat(100_000);
        let mut v =
            json!({"calls": [{"id": "n/1/0", "request_headers": {"cookie": big}}], "total": 1});
        page(&mut v, 0, DEFAULT_BUDGET);
        assert!(size(&v) <= DEFAULT_BUDGET);
        assert_eq!(v["calls"][0]["id"], "n/1/0");
        let cookie = v["calls"][0]["request_headers"]["cookie"]
            .as_str()
            .unwrap_or("");
        assert!(cookie.ends_with("more bytes]"), "{cookie:.40}");
    }

    #[test]
    fn any_result_fits_with_lists_cut() {
        let groups: Vec<Value> = (0..5_000)
            .map(|i| json!({"key": format!("/path/{i}"), "count": i}))
            .collect();
        let mut v = json!({"count": 5, "groups": groups, "timeline": [1, 2, 3]});
        assert!(bound(&mut v, DEFAULT_BUDGET));
        assert!(size(&v) <= DEFAULT_BUDGET, "{}", size(&v));
        assert!(v["groups"].as_array().is_some_and(|g| !g.is_empty()));
        assert_eq!(v["timeline"], json!([1, 2, 3]));
        assert!(v["result_cut"].is_string());
        assert_eq!(budget(None), DEFAULT_BUDGET);
        assert_eq!(budget(Some(10)), 1_000);
        assert_eq!(budget(Some(u64::MAX)), MAX_BUDGET);
    }
}
