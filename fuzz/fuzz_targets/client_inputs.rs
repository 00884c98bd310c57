//! `client_inputs`: see `missive_fuzz::client` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| missive_fuzz::client::run(data));
