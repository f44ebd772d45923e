//! Fuzz target `composite_key`: the body is `cairn::fuzzing::composite_key`, which tests/fuzz_corpus.rs also
//! runs on every corpus file and past finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // An `Err` is a refused input, as it should be; a bug panics.
    let _ = cairn::fuzzing::composite_key(data);
});
