//! Artefact tests: the Prometheus rules in `alerts/`, the Grafana dashboards in `dashboards/`,
//! the Kubernetes manifests in `deploy/kubernetes/` and the Alertmanager example in
//! `deploy/alertmanager/`. Every PromQL expression is parsed by promtool and every metric name
//! and label matcher in it is checked against the catalogue (`src/metrics/catalogue.rs`), so a
//! dashboard or an alert on a metric pgvigil does not export cannot be merged. The live check
//! against a real Prometheus is in `dashboards_live.rs`.
//!
//! Generated files (`deploy/kubernetes/prometheusrule.yaml`, `grafana-dashboards.yaml`) are
//! rebuilt in memory by the one generator (`examples/generate_manifests/manifests.rs`) and
//! compared with the committed ones; `make generate` rewrites them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use pgvigil::metrics::catalogue::Naming;
use serde_norway::Value;

use crate::harness::manifests;
use crate::harness::promql::{metric_names, selectors, substitute};
use crate::harness::require_binary;
use crate::harness::shipped::{
    alert_exprs, dashboard_exprs, files, json, read, recorded, rel, root, rules, yaml,
};

const PROMTOOL: &str = "/usr/bin/promtool";
const AMTOOL: &str = "/usr/bin/amtool";

/// Series that Prometheus itself creates: allowed beside the catalogue.
const PROMETHEUS_SERIES: &[&str] = &["up"];

/// Runs a command, returning (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn metric_names_are_extracted_without_labels_functions_or_keywords() {
    let e = r#"sum by (job, instance) (rate(pgvigil_api_requests_total{code=~"5..",route!="{x}"}[5m] offset 1h)) / on(job) group_left(version) pgvigil_build_info > 1e+3 and bool up == 0.5 or histogram_quantile(0.9, x_bucket) unless absent(pg_up{job="a"}) or pgvigil_api:error_ratio:rate5m"#;
    assert_eq!(
        metric_names(e),
        [
            "pgvigil_api_requests_total",
            "pgvigil_build_info",
            "up",
            "x_bucket",
            "pg_up",
            "pgvigil_api:error_ratio:rate5m"
        ]
    );
    assert_eq!(
        selectors(r#"rate(a_total{code=~"5..", route!="x,y=z"}[5m]) / b"#),
        [
            (
                "a_total".to_string(),
                vec!["code".to_string(), "route".to_string()]
            ),
            ("b".to_string(), vec![])
        ]
    );
    // The catalogue lookup the check relies on: compat names without `_total`, prefixes.
    use pgvigil::metrics::catalogue::lookup;
    assert!(lookup("pg_stat_database_xact_commit").is_some());
    assert!(lookup("pg_stat_database_xact_commit_total").is_none());
    assert!(lookup("pg_settings_max_connections").is_some());
    assert!(lookup("pgvigil_api_request_duration_seconds_bucket").is_some());
    assert!(lookup("pg_replication_lag").is_none());
    assert_eq!(
        substitute(
            r#"rate(x{job=~"$job",i=~"${instance}"}[$__rate_interval]) + increase(y[$__range])"#,
            "1m",
            "1h"
        ),
        r#"rate(x{job=~".+",i=~".+"}[1m]) + increase(y[1h])"#
    );
}

#[test]
fn rule_files_pass_promtool_check_and_unit_tests() {
    require_binary(PROMTOOL, "prometheus");
    let mut check = Command::new(PROMTOOL);
    check.args(["check", "rules"]).args(files("alerts", ".yml"));
    let (ok, out) = run(&mut check);
    assert!(ok, "promtool check rules:\n{out}");

    let tests = files("alerts/tests", ".yml");
    let mut unit = Command::new(PROMTOOL);
    unit.current_dir(root().join("alerts/tests"))
        .args(["test", "rules"])
        .args(&tests);
    let (ok, out) = run(&mut unit);
    assert!(ok, "promtool test rules:\n{out}");
}

#[test]
fn every_alert_is_labelled_annotated_has_a_runbook_and_firing_and_silent_tests() {
    // Which alerts the unit tests show firing and silent, and which rule files they load.
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let mut tested_files = BTreeSet::new();
    for f in files("alerts/tests", ".yml") {
        let doc = yaml(&f);
        for rf in doc["rule_files"].as_sequence().into_iter().flatten() {
            let p = root().join("alerts/tests").join(rf.as_str().unwrap_or(""));
            tested_files.insert(rel(&p.canonicalize().unwrap_or(p)));
        }
        for t in doc["tests"].as_sequence().into_iter().flatten() {
            for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = a["alertname"].as_str().unwrap_or("").to_string();
                match a["exp_alerts"].as_sequence() {
                    Some(v) if !v.is_empty() => firing.insert(name),
                    _ => silent.insert(name),
                };
            }
        }
    }
    for f in files("alerts", ".yml") {
        assert!(
            tested_files.contains(&rel(&f)),
            "{} is not loaded by any file in alerts/tests/",
            rel(&f)
        );
    }

    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for (file, r) in rules() {
        let Some(name) = r["alert"].as_str() else {
            continue;
        };
        names.insert(name.to_string());
        let at = format!("{file} {name}");
        match r["labels"]["severity"].as_str() {
            Some("page") | Some("ticket") => {}
            other => problems.push(format!("{at}: severity {other:?}, want page or ticket")),
        }
        let ann = &r["annotations"];
        if ann["summary"].as_str().is_none_or(|s| s.trim().is_empty()) {
            problems.push(format!("{at}: no summary"));
        }
        let desc = ann["description"].as_str().unwrap_or("");
        // Staleness rules (label `metric`) fire on absence: the missing metric is the value.
        let staleness = r["labels"]["metric"].is_string();
        if !desc.contains("$value") && !staleness {
            problems.push(format!("{at}: description does not show $value"));
        }
        let expr = r["expr"].as_str().unwrap_or("");
        if !desc.contains("$labels.") && !expr.trim_start().starts_with("absent(") {
            problems.push(format!("{at}: description names no object ($labels.…)"));
        }
        let want = format!("/docs/runbooks/{name}.md");
        match ann["runbook_url"].as_str() {
            Some(u) if u.ends_with(&want) => {}
            other => problems.push(format!("{at}: runbook_url {other:?} must end in {want}")),
        }
        let runbook = root().join(format!("docs/runbooks/{name}.md"));
        match std::fs::read_to_string(&runbook) {
            Ok(text) => {
                for heading in ["## Meaning", "## Confirm", "## Act"] {
                    if !text.contains(heading) {
                        problems.push(format!("{}: no {heading:?} section", rel(&runbook)));
                    }
                }
            }
            Err(_) => problems.push(format!("{at}: {} is missing", rel(&runbook))),
        }
    }
    for name in &names {
        if !firing.contains(name) {
            problems.push(format!("{name}: no promtool test shows it firing"));
        }
        if !silent.contains(name) {
            problems.push(format!("{name}: no promtool test shows it silent"));
        }
    }
    for name in firing.union(&silent) {
        if !names.contains(name) {
            problems.push(format!("alerts/tests names {name}, which no rule defines"));
        }
    }
    // The issue's list, so that none is dropped by accident.
    for required in [
        "PostgresDown",
        "PgvigilScrapeFailing",
        "PostgresTooManyConnections",
        "PostgresReplicationLag",
        "PostgresReplicationLagBytes",
        "PostgresReplicationSlotInactive",
        "PostgresLongRunningTransaction",
        "PostgresIdleInTransaction",
        "PostgresXidWraparound",
        "PostgresDeadlocks",
        "PgbouncerPoolExhausted",
        "PgbouncerPoolUtilizationHigh",
        "PgbouncerDown",
        "PostgrestNotReady",
        "PostgrestPoolTimeouts",
        "ApiErrorRatioHigh",
        "ApiLatencyHigh",
        "PgvigilBackupFailed",
        "PgvigilBackupTooOld",
        "PgvigilWalArchiveFailing",
        "PgvigilWalArchiveTooOld",
        "PgvigilPitrContinuityBroken",
        "PgvigilRecoveryWindowShort",
        "PgvigilRestoreDrillFailed",
        "PgvigilRestoreDrillTooOld",
        "PgvigilResidencyViolation",
        "PgvigilOffsiteCopyTooOld",
        "PgvigilMetricMissing",
        "PgvigilAuditForwardLag",
    ] {
        if !names.contains(required) {
            problems.push(format!("required alert {required} is missing"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_promql_expression_parses_and_uses_only_catalogue_metrics() {
    require_binary(PROMTOOL, "prometheus");
    let recorded = recorded();
    let mut all = alert_exprs();
    all.extend(dashboard_exprs());
    assert!(all.len() > 50, "only {} expressions found", all.len());

    // Names: every one must be in the catalogue, recorded by alerts/, or made by Prometheus.
    let mut unknown = Vec::new();
    for e in &all {
        let names = metric_names(&substitute(&e.expr, "1m", "1h"));
        if names.is_empty() && !e.expr.contains("time()") {
            unknown.push(format!("{}: selects no metric: {}", e.origin, e.expr));
        }
        for (n, labels) in selectors(&substitute(&e.expr, "1m", "1h")) {
            let def = pgvigil::metrics::catalogue::lookup(&n);
            let known =
                def.is_some() || recorded.contains(&n) || PROMETHEUS_SERIES.contains(&n.as_str());
            if !known {
                unknown.push(format!("{}: {n} is not in the catalogue", e.origin));
            }
            // Label matchers: the entry's labels, the scrape's job/instance, le on buckets.
            // Prefix entries (pg_settings_*, pgrst_*) have labels the catalogue cannot know.
            let Some(def) = def else { continue };
            if def.naming != Naming::Exact {
                continue;
            }
            for l in labels {
                let ok = def.labels.contains(&l.as_str())
                    || ["job", "instance"].contains(&l.as_str())
                    || (l == "le" && n.ends_with("_bucket"));
                if !ok {
                    unknown.push(format!(
                        "{}: {n} has no label {l} (labels: {:?})",
                        e.origin, def.labels
                    ));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics not exported by pgvigil (see `pgvigil catalog`):\n{}",
        unknown.join("\n")
    );

    // Every major: an expression whose PostgreSQL families all lack on a major (17 moved the
    // checkpoint columns out of pg_stat_bgwriter) would be an empty panel or a silent alert
    // there; such an expression needs an `or` with the family that major has.
    let mut empty_on = Vec::new();
    for e in &all {
        let defs: Vec<_> = metric_names(&substitute(&e.expr, "1m", "1h"))
            .iter()
            .filter_map(|n| pgvigil::metrics::catalogue::lookup(n))
            .collect();
        let versioned: Vec<_> = defs
            .iter()
            .filter(|d| pgvigil::metrics::catalogue::pg_majors(d) != (0, u32::MAX))
            .collect();
        if versioned.is_empty() || versioned.len() < defs.len() {
            continue; // also selects families every major has
        }
        for major in [15, 17, 18] {
            if !versioned
                .iter()
                .any(|d| pgvigil::metrics::catalogue::exists_on(d, major))
            {
                empty_on.push(format!("{} on PostgreSQL {major}: {}", e.origin, e.expr));
            }
        }
    }
    assert!(
        empty_on.is_empty(),
        "expressions without data on a major (catalogue PG_MAJORS):\n{}",
        empty_on.join("\n")
    );

    // Syntax: every expression as a recording rule, checked by promtool.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut text = String::from("groups:\n  - name: expressions\n    rules:\n");
    for (i, e) in all.iter().enumerate() {
        let expr = serde_json::to_string(&substitute(&e.expr, "1m", "1h"))
            .unwrap_or_else(|e| panic!("{e}"));
        text.push_str(&format!(
            "      - record: check:expr{i}\n        expr: {expr}\n"
        ));
    }
    let path = dir.path().join("expressions.yml");
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = run(Command::new(PROMTOOL).args(["check", "rules"]).arg(&path));
    if !ok {
        let bad: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| out.contains(&format!("check:expr{i}\"")))
            .map(|(_, e)| format!("{}: {}", e.origin, e.expr))
            .collect();
        panic!(
            "promtool rejects expressions:\n{}\n\npromtool said:\n{out}",
            bad.join("\n")
        );
    }
}

#[test]
fn dashboards_use_a_datasource_variable_and_job_instance_variables() {
    let mut uids = BTreeSet::new();
    let mut problems = Vec::new();
    for f in files("dashboards", ".json") {
        let d = json(&f);
        let at = rel(&f);
        let uid = d["uid"].as_str().unwrap_or("").to_string();
        if uid.is_empty() || !uids.insert(uid.clone()) {
            problems.push(format!("{at}: missing or duplicate uid {uid:?}"));
        }
        let vars: BTreeMap<String, serde_json::Value> = d["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (v["name"].as_str().unwrap_or("").to_string(), v.clone()))
            .collect();
        match vars.get("datasource") {
            Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
            _ => problems.push(format!("{at}: no Prometheus datasource variable")),
        }
        for name in ["job", "instance"] {
            if !vars.contains_key(name) {
                problems.push(format!("{at}: no ${name} variable"));
            }
        }
        let mut ids = BTreeSet::new();
        let mut stack: Vec<serde_json::Value> = d["panels"].as_array().cloned().unwrap_or_default();
        while let Some(p) = stack.pop() {
            if let Some(inner) = p["panels"].as_array() {
                stack.extend(inner.iter().cloned());
            }
            let title = p["title"].as_str().unwrap_or("?");
            if !ids.insert(p["id"].as_i64().unwrap_or(-1)) {
                problems.push(format!("{at}: panel {title:?}: duplicate id"));
            }
            if p["type"] == "row" {
                continue;
            }
            if p["datasource"]["uid"] != "${datasource}" {
                problems.push(format!(
                    "{at}: panel {title:?}: datasource is not ${{datasource}}"
                ));
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or("");
                let scoped = expr.contains("$job") && expr.contains("$instance");
                if !scoped {
                    problems.push(format!(
                        "{at}: panel {title:?}: query not filtered by $job and $instance: {expr}"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Kubernetes

#[test]
fn generated_kubernetes_files_match_alerts_and_dashboards() {
    let generated = manifests::generate(&root()).unwrap_or_else(|e| panic!("generating: {e}"));
    assert_eq!(
        generated.len(),
        2,
        "prometheusrule.yaml and grafana-dashboards.yaml"
    );
    for g in generated {
        let have = std::fs::read_to_string(root().join(g.path)).unwrap_or_default();
        if have == g.text {
            continue;
        }
        let line = have
            .lines()
            .zip(g.text.lines())
            .position(|(h, w)| h != w)
            .unwrap_or_else(|| have.lines().count().min(g.text.lines().count()))
            + 1;
        panic!(
            "{} is out of date with alerts/ and dashboards/ (first difference at line {line}): \
             run `make generate` and commit the result",
            g.path
        );
    }
}

/// Every document of the kustomize base's resources.
fn kubernetes_documents() -> Vec<(String, Value)> {
    let base = root().join("deploy/kubernetes");
    let k = yaml(&base.join("kustomization.yaml"));
    let mut docs = Vec::new();
    for r in k["resources"].as_sequence().into_iter().flatten() {
        let name = r.as_str().unwrap_or_else(|| panic!("resource {r:?}"));
        let p = base.join(name);
        let text = read(&p);
        for d in serde_norway::Deserializer::from_str(&text) {
            let v = <Value as serde::Deserialize>::deserialize(d)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if !v.is_null() {
                docs.push((name.to_string(), v));
            }
        }
    }
    docs
}

#[test]
fn kubernetes_base_is_a_hardened_sidecar_deployment() {
    let docs = kubernetes_documents();
    let kinds: BTreeMap<String, &Value> = docs
        .iter()
        .map(|(_, d)| (d["kind"].as_str().unwrap_or("").to_string(), d))
        .collect();
    for kind in [
        "StatefulSet",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "ServiceAccount",
    ] {
        assert!(kinds.contains_key(kind), "no {kind} in deploy/kubernetes");
    }
    assert!(
        !kinds.contains_key("CronJob"),
        "the sidecar schedules its jobs: no CronJob"
    );
    for (file, d) in &docs {
        for key in ["apiVersion", "kind"] {
            assert!(d[key].is_string(), "{file}: document without {key}");
        }
        assert!(
            d["metadata"]["name"].is_string(),
            "{file}: a document without a name"
        );
    }

    // The sidecar's configuration parses with pgvigil's own loader.
    let toml = docs
        .iter()
        .find(|(_, d)| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "pgvigil-config")
        .and_then(|(_, d)| d["data"]["pgvigil.toml"].as_str())
        .unwrap_or_else(|| panic!("pgvigil-config has no pgvigil.toml"));
    let no_env = |_: &str| None;
    if let Err(e) = pgvigil::config::parse(toml, Path::new("configmap.yaml"), &no_env) {
        panic!("deploy/kubernetes/configmap.yaml pgvigil.toml: {e}");
    }

    let sts = kinds["StatefulSet"];
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    let containers = pod["containers"].as_sequence().cloned().unwrap_or_default();
    let init = pod["initContainers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let by_name = |v: &[Value], n: &str| v.iter().find(|c| c["name"] == n).cloned();
    let pgvigil = by_name(&containers, "pgvigil").unwrap_or_else(|| panic!("no pgvigil sidecar"));
    let postgres =
        by_name(&containers, "postgres").unwrap_or_else(|| panic!("no postgres container"));
    let copy = by_name(&init, "install-pgvigil")
        .unwrap_or_else(|| panic!("no init container copying the binary"));

    for c in containers.iter().chain(init.iter()) {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        assert_eq!(
            sc["readOnlyRootFilesystem"],
            Value::Bool(true),
            "{name}: readOnlyRootFilesystem"
        );
        assert_eq!(
            sc["allowPrivilegeEscalation"],
            Value::Bool(false),
            "{name}: allowPrivilegeEscalation"
        );
        assert!(
            sc["capabilities"]["drop"]
                .as_sequence()
                .is_some_and(|d| d.iter().any(|x| x == "ALL")),
            "{name}: capabilities.drop ALL"
        );
        for r in ["requests", "limits"] {
            for k in ["cpu", "memory"] {
                assert!(
                    !c["resources"][r][k].is_null() || (r == "limits" && k == "cpu"),
                    "{name}: resources.{r}.{k}"
                );
            }
        }
    }
    // Probes on /healthz and /readyz of the metrics port.
    assert_eq!(pgvigil["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(pgvigil["readinessProbe"]["httpGet"]["path"], "/readyz");
    // The binary reaches postgres's archive_command through a shared volume.
    let mount = |c: &Value, vol: &str| {
        c["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == vol)
            .and_then(|m| m["mountPath"].as_str().map(str::to_string))
    };
    let bin_dir = mount(&copy, "pgvigil-bin")
        .unwrap_or_else(|| panic!("init container does not mount pgvigil-bin"));
    let pg_bin_dir = mount(&postgres, "pgvigil-bin")
        .unwrap_or_else(|| panic!("postgres does not mount pgvigil-bin"));
    let args = serde_norway::to_string(&postgres["args"]).unwrap_or_default();
    assert!(
        args.contains(&format!("archive_command={pg_bin_dir}/pgvigil wal-push")),
        "postgres archive_command must call the copied binary: {args}"
    );
    let copy_cmd = serde_norway::to_string(&copy["command"]).unwrap_or_default();
    assert!(
        copy_cmd.contains(&bin_dir),
        "init container must copy into {bin_dir}: {copy_cmd}"
    );
    // S3 credentials from a Secret (optional) and IRSA on the ServiceAccount.
    let env = serde_norway::to_string(&pgvigil["env"]).unwrap_or_default();
    assert!(env.contains("secretKeyRef"), "S3 credentials from a Secret");
    let sa = kinds["ServiceAccount"];
    assert!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_string(),
        "IRSA annotation on the ServiceAccount"
    );
    // The ServiceMonitor scrapes the Service's metrics port.
    let sm = kinds["ServiceMonitor"];
    let port = sm["spec"]["endpoints"][0]["port"].as_str().unwrap_or("");
    let svc_ports = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "Service")
        .flat_map(|(_, d)| {
            d["spec"]["ports"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect::<Vec<_>>();
    assert!(
        svc_ports.iter().any(|p| p == port),
        "ServiceMonitor port {port:?} not in {svc_ports:?}"
    );
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");

    // Core kinds against the Kubernetes OpenAPI schemas (kubernetes-validate, PyPI).
    let core: Vec<&str> = docs
        .iter()
        .filter(|(_, d)| {
            !d["apiVersion"]
                .as_str()
                .unwrap_or("")
                .starts_with("monitoring.coreos.com")
        })
        .map(|(f, _)| f.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let validator = kubernetes_validate();
    let mut cmd = Command::new(&validator);
    cmd.current_dir(root().join("deploy/kubernetes"))
        .args(["--strict", "--kubernetes-version", "1.29.0"])
        .args(&core);
    let (ok, out) = run(&mut cmd);
    assert!(ok, "kubernetes-validate:\n{out}");
}

/// The `kubernetes-validate` command (pip installs it into a user or venv bin directory).
fn kubernetes_validate() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("kubernetes-validate"))
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("kubernetes-validate is missing: install it with `python3 -m pip install kubernetes-validate` (or run `make deps`)")
    })
}

#[test]
fn alertmanager_example_passes_amtool_and_routes_by_severity() {
    require_binary(AMTOOL, "prometheus-alertmanager");
    let cfg = root().join("deploy/alertmanager/alertmanager.yml");
    let (ok, out) = run(Command::new(AMTOOL).args(["check-config"]).arg(&cfg));
    assert!(ok, "amtool check-config:\n{out}");
    let route = |labels: &[&str]| {
        let out = Command::new(AMTOOL)
            .args(["config", "routes", "test", "--config.file"])
            .arg(&cfg)
            .args(labels)
            .output()
            .unwrap_or_else(|e| panic!("running amtool: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "amtool config routes test {labels:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    assert_eq!(
        route(&["severity=page", "alertname=PostgresDown", "cluster=a"]),
        "pager"
    );
    assert_eq!(
        route(&[
            "severity=ticket",
            "alertname=PgvigilBackupFailed",
            "cluster=a"
        ]),
        "tickets"
    );
    assert_eq!(route(&["alertname=Unlabelled"]), "tickets");

    // PostgresDown inhibits what fails because PostgreSQL is down.
    let doc = yaml(&cfg);
    let inhibits = doc["inhibit_rules"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let down = inhibits
        .iter()
        .find(|r| {
            serde_norway::to_string(&r["source_matchers"])
                .unwrap_or_default()
                .contains("PostgresDown")
        })
        .unwrap_or_else(|| panic!("no inhibition from PostgresDown"));
    let targets = serde_norway::to_string(&down["target_matchers"]).unwrap_or_default();
    let alerts: BTreeSet<String> = rules()
        .iter()
        .filter_map(|(_, r)| r["alert"].as_str().map(str::to_string))
        .collect();
    for dependent in [
        "PgvigilCollectorFailing",
        "PgbouncerPoolExhausted",
        "PgvigilWalArchiveFailing",
        "PostgrestNotReady",
    ] {
        assert!(alerts.contains(dependent), "{dependent} is not an alert");
        assert!(
            targets.contains(dependent),
            "PostgresDown does not inhibit {dependent}: {targets}"
        );
    }
}
