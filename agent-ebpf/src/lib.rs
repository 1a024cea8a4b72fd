//! Remora's eBPF programs live in `src/main.rs` (one object, `remora-tc`); this empty library
//! target lets cargo treat the crate as a normal workspace member.
#![no_std]
