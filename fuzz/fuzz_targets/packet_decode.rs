//! `packet_decode`: see `missive_fuzz::packets` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| missive_fuzz::packets::run(data));
