//! The module map holds: no two top-level modules of `src/` import each other, directly or
//! through others (data flows one way: config → operations → store/registry → HTTP/audit).
//! Read from the source text: every `crate::<module>` path and every `super::` that climbs
//! out of a top-level module counts as an import, in code and in unit tests alike.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules (`src/<name>.rs` or `src/<name>/`), without `lib` and `main`.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src)
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()))
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if p.is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".rs").map(str::to_string)
            }
        })
        .filter(|n| n != "lib" && n != "main")
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file below `src/` (`src/store/s3/mod.rs` → `["store", "s3"]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if stem != "mod" {
            parts.push(stem);
        }
    }
    parts
}

/// The top-level modules that `text` (the file at `path` in the module tree) refers to.
fn imports(path: &[String], text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            let after = &rest[i + "crate::".len()..];
            // `$crate::` in macros and `pgvigil_crate::` style names are not paths of ours.
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
            rest = after;
        }
        // `super::` climbing to the crate root from a top-level module's own files.
        let mut rest = code;
        while let Some(i) = rest.find("super::") {
            let mut after = &rest[i..];
            let mut up = 0;
            while let Some(a) = after.strip_prefix("super::") {
                up += 1;
                after = a;
            }
            if up >= path.len() {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
            rest = &rest[i + "super::".len() * up..];
        }
    }
    out
}

/// Every cycle's modules, one set per strongly connected component of more than one module.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    stack.push(n.clone());
                }
            }
        }
        seen
    };
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for m in graph.keys() {
        let from_m = reach(m);
        let component: BTreeSet<String> = graph
            .keys()
            .filter(|n| *n == m || (from_m.contains(*n) && reach(n).contains(m)))
            .cloned()
            .collect();
        if component.len() > 1 && !found.contains(&component) {
            found.push(component);
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in files {
        let path = module_path(&src, &f);
        let Some(top) = path.first().filter(|t| modules.contains(*t)) else {
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for m in imports(&path, &text) {
            if modules.contains(&m) && &m != top {
                graph.entry(top.clone()).or_default().insert(m);
            }
        }
    }
    graph
}

#[test]
fn no_two_top_level_modules_import_each_other() {
    let graph = graph();
    let found = cycles(&graph);
    let map: Vec<String> = graph
        .iter()
        .map(|(m, deps)| {
            format!(
                "{m} -> {}",
                deps.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles between top-level modules: {found:?}\n{}",
        map.join("\n")
    );
    // The leaves stay leaves: configuration is pure data, events only know the audit log.
    assert!(
        graph["config"].is_empty(),
        "config imports {:?}",
        graph["config"]
    );
    let events: Vec<&String> = graph["events"].iter().collect();
    assert_eq!(events, vec!["audit"], "events imports {events:?}");
}

#[test]
fn the_import_reader_finds_crate_and_super_paths() {
    let path = vec!["store".to_string(), "s3".to_string()];
    let text = "use crate::config::S3Settings;\n// crate::backup in a comment\nuse super::Error;\nuse super::super::metrics::own;\n$crate::x";
    let found: Vec<String> = imports(&path, text).into_iter().collect();
    assert_eq!(found, vec!["config", "metrics"]);
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    let c = cycles(&g);
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].iter().cloned().collect::<Vec<_>>(),
        vec!["a", "b", "c"]
    );
}
