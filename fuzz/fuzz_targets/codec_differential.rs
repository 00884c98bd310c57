//! `codec_differential`: see `missive_fuzz::differential` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // `cargo test` builds every target in a normal build, where the core's
    // `fuzzing` module (and so this check) does not exist.
    #[cfg(fuzzing)]
    missive_fuzz::differential::run(data);
    #[cfg(not(fuzzing))]
    panic!(
        "codec_differential needs --cfg fuzzing (cargo fuzz); got {} bytes",
        data.len()
    );
});
