//! The Kubernetes manifests generated from `alerts/` and `dashboards/`: kustomize cannot
//! reference files outside its root, so `deploy/kubernetes/` carries copies, and this is the
//! one place that builds them. `make generate` (examples/generate_manifests.rs) writes them;
//! the integration tests include this file (`tests/it/harness/mod.rs`) and fail while the
//! committed copies differ from what it builds.
//!
//! Invariant: the output depends only on the sources' bytes and their sorted file names, so
//! regenerating an unchanged tree is byte-identical.

use std::path::{Path, PathBuf};

use serde_norway::Value;

/// The PrometheusRule of the kustomize base, relative to the repository.
pub const PROMETHEUS_RULE: &str = "deploy/kubernetes/prometheusrule.yaml";
/// The Grafana dashboard ConfigMaps of the kustomize base, relative to the repository.
pub const GRAFANA_DASHBOARDS: &str = "deploy/kubernetes/grafana-dashboards.yaml";

/// One generated file: its path relative to the repository and its full text.
#[derive(Debug)]
pub struct Generated {
    pub path: &'static str,
    pub text: String,
}

/// Every generated file, built from the sources under `root` (the repository).
pub fn generate(root: &Path) -> Result<Vec<Generated>, String> {
    Ok(vec![
        Generated {
            path: PROMETHEUS_RULE,
            text: prometheus_rule(root)?,
        },
        Generated {
            path: GRAFANA_DASHBOARDS,
            text: dashboard_configmaps(root)?,
        },
    ])
}

/// Files directly in `dir` (relative to `root`) whose name ends in `ext`, sorted; an empty
/// directory is an error (a typo in a path must not generate an empty manifest).
pub fn sorted_files(root: &Path, dir: &str, ext: &str) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(root.join(dir)).map_err(|e| format!("{dir}: {e}"))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(ext))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no {ext} files in {dir}"));
    }
    Ok(files)
}

fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn to_yaml(doc: &Value) -> Result<String, String> {
    serde_norway::to_string(doc).map_err(|e| format!("writing YAML: {e}"))
}

/// The PrometheusRule: every group of `alerts/*.yml`, in file order.
pub fn prometheus_rule(root: &Path) -> Result<String, String> {
    let mut groups = Vec::new();
    for f in sorted_files(root, "alerts", ".yml")? {
        let doc: Value =
            serde_norway::from_str(&read(&f)?).map_err(|e| format!("{}: {e}", f.display()))?;
        groups.extend(doc["groups"].as_sequence().cloned().unwrap_or_default());
    }
    let mut doc: Value = serde_norway::from_str(
        "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: pgvigil\n  labels:\n    app.kubernetes.io/name: pgvigil\n    app.kubernetes.io/component: alerts\nspec:\n  groups: []\n",
    )
    .map_err(|e| format!("the PrometheusRule template: {e}"))?;
    doc["spec"]["groups"] = Value::Sequence(groups);
    Ok(format!(
        "# GENERATED from alerts/*.yml by examples/generate_manifests: do not edit.\n# Regenerate: make generate\n{}",
        to_yaml(&doc)?
    ))
}

/// One ConfigMap per `dashboards/*.json`, labelled for the Grafana dashboard sidecar; the
/// dashboard JSON is carried verbatim.
pub fn dashboard_configmaps(root: &Path) -> Result<String, String> {
    let mut out = String::from(
        "# GENERATED from dashboards/*.json by examples/generate_manifests: do not edit.\n# Regenerate: make generate\n",
    );
    for f in sorted_files(root, "dashboards", ".json")? {
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut doc: Value = serde_norway::from_str(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pgvigil-dashboard-{stem}\n  labels:\n    app.kubernetes.io/name: pgvigil\n    app.kubernetes.io/component: dashboards\n    grafana_dashboard: \"1\"\n  annotations:\n    grafana_folder: pgvigil\ndata: {{}}\n"
        ))
        .map_err(|e| format!("the ConfigMap template for {stem}: {e}"))?;
        doc["data"][format!("pgvigil-{stem}.json").as_str()] = Value::String(read(&f)?);
        out.push_str("---\n");
        out.push_str(&to_yaml(&doc)?);
    }
    Ok(out)
}
