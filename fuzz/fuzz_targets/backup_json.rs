#![no_main]
// The target itself is `pgvigil::fuzzing::backup_json` (one definition, shared with the corpus
// test that `make test` runs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| pgvigil::fuzzing::backup_json(data));
