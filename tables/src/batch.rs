//! Rows → a record batch, column by column, as a table's definition says.
//!
//! Rows are taken in chunks small enough to stay in cache; within a chunk each column's getter
//! runs over all its rows in one tight loop, so the choice of builder is made once per column and
//! chunk, not once per cell, and a row's memory is read from cache by every column after the first.

use std::{net::IpAddr, sync::Arc};

use arrow::{
    array::{
        ArrayRef, BinaryBuilder, BooleanBuilder, Int64Builder, ListArray, ListBuilder, MapArray,
        MapBuilder, RecordBatch, StringArray, StringBuilder, StructArray, TimestampNanosecondArray,
        UInt16Array, UInt32Array, UInt64Array,
    },
    buffer::{Buffer, OffsetBuffer},
    datatypes::{DataType, Field, SchemaRef},
    error::ArrowError,
};
use remora_dissect::Headers;

use crate::column::{Column, Get, MapEntries, utf8_map_entries, utf8_map_entry_fields};

/// Rows per chunk: a chunk of calls (a few hundred bytes each, plus what they point to) stays
/// in a core's L2 cache while every column reads it.
const CHUNK_ROWS: usize = 512;

/// The record batch of `rows` for a table of `columns` with `schema` (the table's
/// [`crate::Table::write_schema`], derived from the same columns).
pub fn record_batch<R>(
    columns: &[Column<R>],
    schema: SchemaRef,
    rows: &[R],
) -> Result<RecordBatch, ArrowError> {
    let mut builders: Vec<Builder> = columns.iter().map(|c| Builder::new(&c.get, rows)).collect();
    for chunk in rows.chunks(CHUNK_ROWS) {
        for (column, builder) in columns.iter().zip(&mut builders) {
            builder.fill(&column.get, chunk)?;
        }
    }
    let arrays = builders
        .into_iter()
        .map(Builder::finish)
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, arrays)
}

/// One column being built.
enum Builder {
    Bool(BooleanBuilder),
    UInt16(Vec<u16>),
    UInt32(Vec<u32>),
    UInt64(Vec<u64>),
    Int64(Int64Builder),
    Timestamp(Vec<i64>),
    OptTimestamp(Vec<Option<i64>>),
    Text(Box<TextState>),
    /// A [`Get::Str`] column of `rows` rows whose values so far (`empties` of them) were all
    /// empty: it becomes [`Builder::Text`] at its first value that is not. A column that stays
    /// empty in the batch (attribution in a capture file, gRPC and TLS fields of HTTP/1 calls)
    /// is made at once, not value by value. (Sizing these columns by a pass over the rows
    /// before filling them called every getter twice.)
    StrEmptySoFar {
        rows: usize,
        empties: usize,
    },
    /// A list column whose every row in the batch is an empty list.
    EmptyList(usize),
    Binary(BinaryBuilder),
    List(ListBuilder<StringBuilder>),
    Map(Box<MapBuilder<StringBuilder, StringBuilder>>),
    Headers(Box<HeaderMap>),
}

impl Builder {
    /// A builder for `rows`, sized for them up front where the sizes are cheap to know: a
    /// growing buffer is copied at each doubling and touches fresh pages, which the kernel
    /// zeroes (bodies and header lists are most of a batch's bytes).
    fn new<R>(get: &Get<R>, rows: &[R]) -> Self {
        let n = rows.len();
        match get {
            Get::Bool(_) => Self::Bool(BooleanBuilder::with_capacity(n)),
            Get::UInt16(_) => Self::UInt16(Vec::with_capacity(n)),
            Get::UInt32(_) => Self::UInt32(Vec::with_capacity(n)),
            Get::UInt64(_) => Self::UInt64(Vec::with_capacity(n)),
            Get::Int64(_) => Self::Int64(Int64Builder::with_capacity(n)),
            Get::Timestamp(_) => Self::Timestamp(Vec::with_capacity(n)),
            Get::OptTimestamp(_) => Self::OptTimestamp(Vec::with_capacity(n)),
            // Dictionary columns too: the batch holds their text plainly and the Parquet
            // writer makes the dictionary (`Table::write_schema`).
            Get::Str(_) => Self::StrEmptySoFar {
                rows: n,
                empties: 0,
            },
            Get::OptStr(_) | Get::Text(_) | Get::Ip(_) => {
                let bytes: usize = match get {
                    Get::OptStr(f) => rows.iter().map(|r| f(r).map_or(0, str::len)).sum(),
                    _ => n * 8,
                };
                // Never zero: a builder without capacity has no allocation, and every empty
                // value of its array then points at a dangling address. The Parquet writer
                // compares each value with glibc's `memcmp`, whose AVX-512 masked load takes a
                // microcode assist on an unmapped page even for zero bytes: a column of empty
                // strings cost 4× the same column with an allocation (docs/dissection.md,
                // "Parquet's share").
                Self::Text(Box::new(TextState::new(StringBuilder::with_capacity(
                    n,
                    bytes.max(1),
                ))))
            }
            Get::Binary(f) => {
                let bytes = rows.iter().map(|r| f(r).len()).sum();
                Self::Binary(BinaryBuilder::with_capacity(n, bytes))
            }
            Get::List(f) => {
                let (items, bytes) = rows.iter().fold((0, 0), |(i, b), r| {
                    let list = f(r);
                    (
                        i + list.len(),
                        b + list.iter().map(String::len).sum::<usize>(),
                    )
                });
                if items == 0 {
                    return Self::EmptyList(n);
                }
                Self::List(ListBuilder::with_capacity(
                    StringBuilder::with_capacity(items, bytes),
                    n,
                ))
            }
            Get::Map(_) => Self::Map(Box::new(MapBuilder::with_capacity(
                None,
                StringBuilder::new(),
                StringBuilder::new(),
                n,
            ))),
            Get::Headers(f) => Self::Headers(Box::new(HeaderMap::with_capacity(
                n,
                rows.iter().map(|r| f(r).len()).sum(),
                rows.iter().map(|r| f(r).text_len()).sum(),
            ))),
        }
    }

    fn fill<R>(&mut self, get: &Get<R>, rows: &[R]) -> Result<(), ArrowError> {
        if let (Get::Str(f), Self::StrEmptySoFar { rows: n, empties }) = (get, &mut *self) {
            let Some(first) = rows.iter().position(|r| !f(r).is_empty()) else {
                *empties += rows.len();
                return Ok(());
            };
            // Room for every row at this first value's length: the values of a column are
            // alike (paths, hosts, names), and the buffer grows if not.
            let mut out = StringBuilder::with_capacity(*n, f(&rows[first]).len() * *n);
            for _ in 0..*empties + first {
                out.append_value("");
            }
            let mut text = Box::new(TextState::new(out));
            text.fill(get, &rows[first..])?;
            *self = Self::Text(text);
            return Ok(());
        }
        match (get, self) {
            (Get::Bool(f), Self::Bool(b)) => {
                for r in rows {
                    b.append_value(f(r));
                }
            }
            (Get::UInt16(f), Self::UInt16(v)) => v.extend(rows.iter().map(f)),
            (Get::UInt32(f), Self::UInt32(v)) => v.extend(rows.iter().map(f)),
            (Get::UInt64(f), Self::UInt64(v)) => v.extend(rows.iter().map(f)),
            (Get::Int64(f), Self::Int64(b)) => {
                for r in rows {
                    b.append_option(f(r));
                }
            }
            (Get::Timestamp(f), Self::Timestamp(v)) => v.extend(rows.iter().map(f)),
            (Get::OptTimestamp(f), Self::OptTimestamp(v)) => v.extend(rows.iter().map(f)),
            (get, Self::Text(t)) => t.fill(get, rows)?,
            (Get::List(_), Self::EmptyList(_)) => {}
            (Get::Binary(f), Self::Binary(b)) => {
                for r in rows {
                    b.append_value(f(r));
                }
            }
            (Get::List(f), Self::List(b)) => {
                for r in rows {
                    for item in f(r) {
                        b.values().append_value(item);
                    }
                    b.append(true);
                }
            }
            (Get::Map(f), Self::Map(b)) => {
                for r in rows {
                    f(r, &mut MapEntries { builder: b });
                    b.append(true)?;
                }
            }
            (Get::Headers(f), Self::Headers(map)) => {
                for r in rows {
                    map.push(f(r))?;
                }
            }
            _ => {
                return Err(ArrowError::InvalidArgumentError(
                    "a column's builder does not match its getter".into(),
                ));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            Self::Bool(mut b) => Arc::new(b.finish()),
            Self::UInt16(v) => Arc::new(UInt16Array::from(v)),
            Self::UInt32(v) => Arc::new(UInt32Array::from(v)),
            Self::UInt64(v) => Arc::new(UInt64Array::from(v)),
            Self::Int64(mut b) => Arc::new(b.finish()),
            Self::Timestamp(v) => Arc::new(TimestampNanosecondArray::from(v).with_timezone("UTC")),
            Self::OptTimestamp(v) => {
                Arc::new(TimestampNanosecondArray::from(v).with_timezone("UTC"))
            }
            Self::Text(mut t) => Arc::new(t.out.finish()),
            // An allocation all the same, for the reason `Builder::new` gives.
            Self::StrEmptySoFar { rows: n, .. } => Arc::new(StringArray::new(
                OffsetBuffer::new_zeroed(n),
                Buffer::from(Vec::<u8>::with_capacity(1)),
                None,
            )),
            Self::EmptyList(n) => Arc::new(ListArray::try_new(
                Arc::new(Field::new_list_field(DataType::Utf8, true)),
                OffsetBuffer::new_zeroed(n),
                Arc::new(StringArray::new_null(0)),
                None,
            )?),
            Self::Binary(mut b) => Arc::new(b.finish()),
            Self::List(mut b) => Arc::new(b.finish()),
            Self::Map(mut b) => Arc::new(b.finish()),
            Self::Headers(map) => map.finish()?,
        })
    }
}

/// A `Map(Utf8, Utf8)` column of header fields, built from each row's [`Headers`] buffer with
/// one pass over its bytes: names are copied and lower-cased in the same loop, values copied
/// whole, and the offsets come from the buffer's field ends. (Through `MapBuilder` every entry
/// cost two builder appends, a validity bit each, and a scan for upper case before a copy to
/// lower it.)
struct HeaderMap {
    /// Per row, where its entries start; one more for the end.
    entry_offsets: Vec<i32>,
    name_offsets: Vec<i32>,
    names: Vec<u8>,
    value_offsets: Vec<i32>,
    values: Vec<u8>,
}

impl HeaderMap {
    fn with_capacity(rows: usize, fields: usize, bytes: usize) -> Self {
        let mut map = Self {
            entry_offsets: Vec::with_capacity(rows + 1),
            name_offsets: Vec::with_capacity(fields + 1),
            names: Vec::with_capacity(bytes / 3),
            value_offsets: Vec::with_capacity(fields + 1),
            values: Vec::with_capacity(bytes),
        };
        map.entry_offsets.push(0);
        map.name_offsets.push(0);
        map.value_offsets.push(0);
        map
    }

    fn push(&mut self, headers: &Headers) -> Result<(), ArrowError> {
        let (text, ends) = headers.as_parts();
        let text = text.as_bytes();
        let mut start = 0;
        for &(name_end, value_end) in ends {
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            let (Some(name), Some(value)) =
                (text.get(start..name_end), text.get(name_end..value_end))
            else {
                return Err(ArrowError::InvalidArgumentError(
                    "a header field outside its buffer".into(),
                ));
            };
            push_lower_case(&mut self.names, name);
            self.values.extend_from_slice(value);
            self.name_offsets.push(offset(self.names.len())?);
            self.value_offsets.push(offset(self.values.len())?);
            start = value_end;
        }
        self.entry_offsets
            .push(offset(self.name_offsets.len() - 1)?);
        Ok(())
    }

    fn finish(self) -> Result<ArrayRef, ArrowError> {
        // `try_new` checks the text is UTF-8: a pass over the bytes, a small price for no
        // `unsafe` here.
        let names = StringArray::try_new(
            OffsetBuffer::new(self.name_offsets.into()),
            self.names.into(),
            None,
        )?;
        let values = StringArray::try_new(
            OffsetBuffer::new(self.value_offsets.into()),
            self.values.into(),
            None,
        )?;
        let entries = StructArray::try_new(
            utf8_map_entry_fields(),
            vec![Arc::new(names) as ArrayRef, Arc::new(values)],
            None,
        )?;
        Ok(Arc::new(MapArray::try_new(
            utf8_map_entries(),
            OffsetBuffer::new(self.entry_offsets.into()),
            entries,
            None,
            false,
        )?))
    }
}

/// Appends `name` to `out` with ASCII upper case in lower case, eight bytes at a time; every
/// other byte (UTF-8 sequences included) is left as it is, so the text stays valid UTF-8.
/// (Byte by byte this was most of the time spent copying header names: 2.5 M of them in the
/// bench capture.)
fn push_lower_case(out: &mut Vec<u8>, name: &[u8]) {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    let mut words = name.chunks_exact(8);
    out.reserve(name.len());
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_ne_bytes(bytes);
        // Per byte, with the top bit cleared so that no addition carries into the next:
        // `low + 0x3f` sets the top bit from 'A' (0x41) up, `low + 0x25` from past 'Z' (0x5a)
        // up; upper case is the bytes where exactly one is set, among the ASCII bytes.
        let low = x & (0x7f * ONES);
        let upper = ((low + 0x3f * ONES) ^ (low + 0x25 * ONES)) & !x & (0x80 * ONES);
        out.extend_from_slice(&(x | (upper >> 2)).to_ne_bytes());
    }
    out.extend(
        words
            .remainder()
            .iter()
            .map(|&b| b | (u8::from(b.is_ascii_uppercase()) << 5)),
    );
}

/// `len` as an Arrow offset, or the error a builder gives when a batch outgrows 2 GiB.
fn offset(len: usize) -> Result<i32, ArrowError> {
    i32::try_from(len).map_err(|_| ArrowError::OffsetOverflowError(len))
}

/// A text column being built, with what its getter kind needs between chunks.
struct TextState {
    out: StringBuilder,
    /// Scratch for [`Get::Text`], and the text of `last_ip` for [`Get::Ip`].
    buf: String,
    last_ip: Option<IpAddr>,
}

impl TextState {
    fn new(out: StringBuilder) -> Self {
        Self {
            out,
            buf: String::new(),
            last_ip: None,
        }
    }

    fn fill<R>(&mut self, get: &Get<R>, rows: &[R]) -> Result<(), ArrowError> {
        match get {
            Get::Str(f) => {
                for r in rows {
                    self.out.append_value(f(r));
                }
            }
            Get::OptStr(f) => {
                for r in rows {
                    self.out.append_option(f(r));
                }
            }
            Get::Text(f) => {
                for r in rows {
                    self.buf.clear();
                    f(r, &mut self.buf);
                    self.out.append_value(&self.buf);
                }
            }
            Get::Ip(f) => {
                // Calls of one client or server come in runs: format each run's address once
                // (formatting every row was ~3% of a dissection).
                for r in rows {
                    let ip = f(r);
                    if self.last_ip != Some(ip) {
                        use std::fmt::Write as _;
                        self.buf.clear();
                        let _ = write!(self.buf, "{ip}");
                        self.last_ip = Some(ip);
                    }
                    self.out.append_value(&self.buf);
                }
            }
            _ => {
                return Err(ArrowError::InvalidArgumentError(
                    "a text column with a getter that is not text".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array as _, AsArray as _};

    use super::*;
    use crate::column::Encoding;

    #[test]
    fn names_lower_case_like_the_standard_library_for_every_byte() {
        // Every byte value at every position of a word and of the remainder, between
        // neighbours that are upper case, lower case and not ASCII.
        for len in [1, 7, 8, 9, 15, 16, 17, 24] {
            for at in 0..len {
                for b in 0..=255u8 {
                    for fill in [b'A', b'z', b'@', b'[', 0xc3, 0x80, b'Z'] {
                        let mut name = vec![fill; len];
                        name[at] = b;
                        let mut out = b"prefix".to_vec();
                        push_lower_case(&mut out, &name);
                        let mut want = b"prefix".to_vec();
                        want.extend(name.to_ascii_lowercase());
                        assert_eq!(out, want, "{name:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn header_maps_lower_case_names_and_keep_rows_apart() {
        let rows: Vec<Headers> = vec![
            [("Content-Type", "text/plain"), ("X-ÜNÏ-Id", "Wert Ä")]
                .into_iter()
                .collect(),
            Headers::new(),
            [("", "no name"), ("ACCEPT", ""), ("set-cookie", "a=1")]
                .into_iter()
                .collect(),
            [("@[`{Z", "edges of A-Z")].into_iter().collect(),
        ];
        let columns = [Column::new(
            "h",
            "h",
            Get::Headers(|r: &Headers| r),
            Encoding::Unique,
            "all",
            "",
            "",
        )];
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("h", crate::column::utf8_map_type(), true),
        ]));
        let batch = record_batch(&columns, schema, &rows).unwrap_or_else(|e| panic!("{e}"));
        let map = batch.column(0).as_map();
        assert_eq!(map.len(), rows.len());
        assert_eq!(map.null_count(), 0);
        for (i, headers) in rows.iter().enumerate() {
            let entries = map.value(i);
            let names = entries.column(0).as_string::<i32>();
            let values = entries.column(1).as_string::<i32>();
            let got: Vec<(&str, &str)> = (0..entries.len())
                .map(|j| (names.value(j), values.value(j)))
                .collect();
            let want: Vec<(String, &str)> = headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect();
            let want: Vec<(&str, &str)> = want.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            assert_eq!(got, want, "row {i}");
        }
        assert_eq!(
            map.value(0).column(0).as_string::<i32>().value(1),
            "x-ÜnÏ-id"
        );
        assert_eq!(map.value(3).column(0).as_string::<i32>().value(0), "@[`{z");
    }

    #[test]
    fn text_that_starts_empty_keeps_every_row_in_place() {
        // Empty for more than a chunk, then values; a column empty throughout; one with a
        // value in its first row, then a longer one (the buffer grows past its first guess).
        let n = 3 * CHUNK_ROWS + 5;
        let rows: Vec<(String, String)> = (0..n)
            .map(|i| {
                let late = if i >= CHUNK_ROWS + 7 {
                    format!("v{i}")
                } else {
                    String::new()
                };
                let early = if i == 0 {
                    "a".to_owned()
                } else {
                    "b".repeat(i % 40)
                };
                (late, early)
            })
            .collect();
        let columns = [
            Column::new(
                "late",
                "late",
                Get::Str(|r: &(String, String)| &r.0),
                Encoding::Default,
                "all",
                "",
                "",
            ),
            Column::new(
                "none",
                "none",
                Get::Str(|_: &(String, String)| ""),
                Encoding::Default,
                "all",
                "",
                "",
            ),
            Column::new(
                "early",
                "early",
                Get::Str(|r: &(String, String)| &r.1),
                Encoding::Default,
                "all",
                "",
                "",
            ),
        ];
        let schema = Arc::new(arrow::datatypes::Schema::new(
            ["late", "none", "early"]
                .map(|name| arrow::datatypes::Field::new(name, DataType::Utf8, false))
                .to_vec(),
        ));
        let batch = record_batch(&columns, schema, &rows).unwrap_or_else(|e| panic!("{e}"));
        let text = |i: usize| batch.column(i).as_string::<i32>();
        for (row, (late, early)) in rows.iter().enumerate() {
            assert_eq!(text(0).value(row), late, "row {row}");
            assert_eq!(text(1).value(row), "", "row {row}");
            assert_eq!(text(2).value(row), early, "row {row}");
        }
        assert_eq!(text(1).len(), n);
        assert_eq!(text(1).null_count(), 0);
    }
}
