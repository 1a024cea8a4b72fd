//! Helpers shared by the agent's unit tests.

use std::path::Path;

use arrow::{array::AsArray as _, datatypes::TimestampNanosecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The `ts` column of a slice file, read back with the parquet crate (every column of each
/// batch must have as many rows).
pub fn read_ts(path: &Path) -> Vec<i64> {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let ts = batch.column(0).as_primitive::<TimestampNanosecondType>();
        assert!(batch.columns().iter().all(|c| c.len() == ts.len()));
        out.extend(ts.values().iter().copied());
    }
    out
}
