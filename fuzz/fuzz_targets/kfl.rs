//! KFL text from arbitrary bytes: parse, compile against the calls and conns schemas, unparse.
//! No input may panic; every refusal is a located error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora_kfl::{CompileOptions, Table, catalog, compile, to_sql};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let options = CompileOptions { now_ns: 1_795_514_400_000_000_000 };
    for table in [Table::Calls, Table::Conns] {
        match compile(text, table, &catalog::schema(table), &options) {
            Ok(Some(expr)) => {
                let _ = to_sql(&expr);
            }
            Ok(None) => {}
            Err(e) => {
                if let Some(d) = e.detail() {
                    assert!(d.position.offset <= text.len());
                }
            }
        }
    }
});
