//! The fuzz corpora as a regression run on stable Rust, without libFuzzer: every file of
//! `fuzz/corpus/<target>/` (the seeds) and `fuzz/artifacts/<target>/` (crashes the fuzzer
//! found, kept after the fix) goes through the same `pgvigil::fuzzing::<target>` that the
//! cargo-fuzz binary calls. `make fuzz` does the fuzzing itself (docs/testing.md).

use std::path::{Path, PathBuf};

use pgvigil::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

#[test]
fn every_target_has_a_cargo_fuzz_binary_and_seeds() {
    let fuzz = fuzz_dir();
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("fuzz/Cargo.toml: {e}"));
    for (name, _) in TARGETS {
        let wrapper = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&wrapper)
            .unwrap_or_else(|e| panic!("{}: {e}", wrapper.display()));
        assert!(
            text.contains(&format!("pgvigil::fuzzing::{name}(data)")),
            "{} must call pgvigil::fuzzing::{name}",
            wrapper.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        let seeds = inputs(&fuzz.join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seed");
    }
    // And no binary without a target in pgvigil::fuzzing::TARGETS.
    for file in inputs(&fuzz.join("fuzz_targets")) {
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
        assert!(
            TARGETS.iter().any(|(n, _)| Some(*n) == stem.as_deref()),
            "{} is not in pgvigil::fuzzing::TARGETS",
            file.display()
        );
    }
}

#[test]
fn every_seed_and_kept_crash_runs_clean() {
    let fuzz = fuzz_dir();
    let mut ran = 0;
    let mut failed = Vec::new();
    for (name, target) in TARGETS {
        let files = [
            inputs(&fuzz.join("corpus").join(name)),
            inputs(&fuzz.join("artifacts").join(name)),
        ]
        .concat();
        for path in files {
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            ran += 1;
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz inputs that fail (reproduce with `cargo +nightly fuzz run <target> <file>`): {failed:#?}"
    );
    assert!(ran >= 2 * TARGETS.len(), "only {ran} corpus files ran");
}
