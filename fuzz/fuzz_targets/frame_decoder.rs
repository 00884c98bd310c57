//! `frame_decoder`: see `missive_fuzz::frames` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| missive_fuzz::frames::run(data));
