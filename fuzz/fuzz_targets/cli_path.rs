//! Fuzz target `cli_path`: the body is `cairn::fuzzing::cli_path`, which tests/fuzz_corpus.rs also
//! runs on every corpus file and past finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // An `Err` is a refused input, as it should be; a bug panics.
    let _ = cairn::fuzzing::cli_path(data);
});
