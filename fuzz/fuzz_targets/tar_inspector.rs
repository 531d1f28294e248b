#![no_main]
// The target itself is `pgvigil::fuzzing::tar_inspector` (one definition, shared with the corpus
// test that `make test` runs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| pgvigil::fuzzing::tar_inspector(data));
