#![no_main]
// The target itself is `pgvigil::fuzzing::upstream_response` (one definition, shared with the
// corpus test that `make test` runs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| pgvigil::fuzzing::upstream_response(data));
