//! `envelope_open`: see `missive_fuzz::envelope` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| missive_fuzz::envelope::run(data));
