//! The recorder's path from ring samples to a Parquet file, on arbitrary samples: each must be
//! decoded or refused without a panic, and whatever was kept must read back, row for row.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora_agent::{
    clock::TaiToUtc,
    decode::Decoder,
    packets_parquet::{Compression, PacketsFile, PageRows, PayloadCompressor, RowGroupEncoder},
};

fuzz_target!(|data: &[u8]| {
    let decoder = Decoder {
        clock: TaiToUtc::with_offset_ns(0),
        snaplen: 4096,
        l2_len: [(1, 14), (2, 0)].into_iter().collect(),
    };
    let Ok(compressor) = PayloadCompressor::new(Compression::Auto) else {
        return;
    };
    let mut encoder = RowGroupEncoder::new(compressor, 64 << 10);
    let Ok(mut file) = PacketsFile::new(Vec::new(), "fuzz") else {
        return;
    };
    // Small pages, so that page, row group and dictionary boundaries are all reached.
    let mut page = PageRows::with_payload_limit(4096);
    let mut kept = 0u64;
    let mut encode = |page: &mut PageRows, encoder: &mut RowGroupEncoder, file: &mut PacketsFile<Vec<u8>>, last: bool| {
        let full = encoder.encode_page(page).expect("encoding in memory");
        page.clear();
        if (full || last)
            && let Some(group) = encoder.take()
        {
            file.write_row_group(&group).expect("writing to memory");
            encoder.recycle(group);
        }
    };
    // The input is a sequence of samples, each a 1-byte length (times 4) and its bytes.
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let len = (usize::from(n) * 4).min(tail.len());
        let (sample, next) = tail.split_at(len);
        rest = next;
        if let Ok((meta, payload)) = decoder.split(sample) {
            page.push_packet(&meta, payload);
            kept += 1;
            if page.is_full() {
                encode(&mut page, &mut encoder, &mut file, false);
            }
        }
    }
    encode(&mut page, &mut encoder, &mut file, true);
    let (_, bytes) = file.finish().expect("finishing in memory");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )
    .expect("the file is readable Parquet")
    .build()
    .expect("a reader");
    let rows: usize = reader.map(|b| b.expect("every row group reads").num_rows()).sum();
    assert_eq!(rows as u64, kept);
});
