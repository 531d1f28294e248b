//! `make generate`: rewrites the Kubernetes manifests generated from `alerts/` and
//! `dashboards/` (`deploy/kubernetes/prometheusrule.yaml`, `grafana-dashboards.yaml`).
//! Run it after editing an alert or a dashboard and commit the result; the artefact tests
//! fail while the committed files differ. The generator itself is `manifests.rs` beside this file.
//!
//! ```sh
//! cargo run --locked --example generate_manifests
//! ```

mod manifests;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = match manifests::generate(root) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("generate_manifests: {e}");
            return ExitCode::FAILURE;
        }
    };
    for g in generated {
        let path = root.join(g.path);
        if std::fs::read_to_string(&path).is_ok_and(|have| have == g.text) {
            println!("unchanged {}", g.path);
            continue;
        }
        if let Err(e) = std::fs::write(&path, &g.text) {
            eprintln!("generate_manifests: writing {}: {e}", g.path);
            return ExitCode::FAILURE;
        }
        println!("wrote     {}", g.path);
    }
    ExitCode::SUCCESS
}
