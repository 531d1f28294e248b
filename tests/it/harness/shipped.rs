//! The artefacts the repository ships, read for the tests: files under the repository root,
//! the rules of `alerts/*.yml` and the queries of `dashboards/*.json`, each expression with
//! where it comes from (for messages that point at the file and rule or panel).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_norway::Value;

use super::manifests;

/// The repository (the crate's manifest directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files in `dir` (relative to the repository) ending in `ext`, sorted, at least one: the
/// same listing the manifest generator uses.
pub fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    manifests::sorted_files(&root(), dir, ext).unwrap_or_else(|e| panic!("{e}"))
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn yaml(p: &Path) -> Value {
    serde_norway::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// One PromQL expression and where it comes from.
#[derive(Debug, Clone)]
pub struct Expr {
    pub origin: String,
    pub expr: String,
}

/// Every rule (alert or record) of `alerts/*.yml`, with its file.
pub fn rules() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for f in files("alerts", ".yml") {
        let doc = yaml(&f);
        let groups = doc["groups"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{}: no groups", rel(&f)));
        for g in groups {
            for r in g["rules"].as_sequence().into_iter().flatten() {
                out.push((rel(&f), r.clone()));
            }
        }
    }
    out
}

/// Names defined by recording rules.
pub fn recorded() -> BTreeSet<String> {
    rules()
        .iter()
        .filter_map(|(_, r)| r["record"].as_str().map(str::to_string))
        .collect()
}

/// Every rule's expression, named `<file> <alert or record>`.
pub fn alert_exprs() -> Vec<Expr> {
    rules()
        .into_iter()
        .map(|(file, r)| {
            let name = r["alert"]
                .as_str()
                .or_else(|| r["record"].as_str())
                .unwrap_or("?")
                .to_string();
            let expr = r["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: {name} has no expr"))
                .to_string();
            Expr {
                origin: format!("{file} {name}"),
                expr,
            }
        })
        .collect()
}

/// A panel's queries: (dashboard uid, panel title, expressions).
pub struct Panel {
    pub dashboard: String,
    pub title: String,
    pub exprs: Vec<String>,
}

fn collect_panels(uid: &str, panels: &serde_json::Value, out: &mut Vec<Panel>) {
    for p in panels.as_array().into_iter().flatten() {
        if let Some(inner) = p.get("panels") {
            collect_panels(uid, inner, out);
        }
        let exprs: Vec<String> = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str().map(str::to_string))
            .collect();
        if !exprs.is_empty() {
            out.push(Panel {
                dashboard: uid.to_string(),
                title: p["title"].as_str().unwrap_or("?").to_string(),
                exprs,
            });
        }
    }
}

/// Every panel with queries, rows' nested panels included, of `dashboards/*.json`.
pub fn dashboard_panels() -> Vec<Panel> {
    let mut out = Vec::new();
    for f in files("dashboards", ".json") {
        let d = json(&f);
        let uid = d["uid"].as_str().unwrap_or("?").to_string();
        collect_panels(&uid, &d["panels"], &mut out);
    }
    out
}

/// Templating queries, as PromQL: `label_values(selector, label)` becomes `selector`.
pub fn dashboard_variable_exprs() -> Vec<Expr> {
    let mut out = Vec::new();
    for f in files("dashboards", ".json") {
        let d = json(&f);
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] != "query" {
                continue;
            }
            let q = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .unwrap_or_else(|| panic!("{}: variable {} has no query", rel(&f), v["name"]));
            let expr = match q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .and_then(|s| s.rsplit_once(','))
            {
                Some((sel, _label)) => sel.trim().to_string(),
                None => q.to_string(),
            };
            out.push(Expr {
                origin: format!("{} variable {}", rel(&f), v["name"]),
                expr,
            });
        }
    }
    out
}

/// Every panel query and variable query of the dashboards.
pub fn dashboard_exprs() -> Vec<Expr> {
    let mut out: Vec<Expr> = dashboard_panels()
        .into_iter()
        .flat_map(|p| {
            let origin = format!("dashboard {} panel {:?}", p.dashboard, p.title);
            p.exprs.into_iter().map(move |expr| Expr {
                origin: origin.clone(),
                expr,
            })
        })
        .collect();
    out.extend(dashboard_variable_exprs());
    out
}
