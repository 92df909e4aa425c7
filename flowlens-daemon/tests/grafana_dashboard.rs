//! The Grafana dashboard (`deploy/grafana/flowlens.json`): every query names metrics
//! the daemon or the API really exports (the daemon's catalogue; the API's generated
//! `docs/metrics-api.md`), with labels those metrics have, and parses as `PromQL`
//! (`promtool check rules` on the queries as recording rules).

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use flowlens_daemon::telemetry::catalogue;

/// name -> (labels, histogram-like).
fn exported() -> BTreeMap<String, (BTreeSet<String>, bool)> {
    let mut known = BTreeMap::new();
    for m in catalogue::all() {
        known.insert(
            m.name.to_owned(),
            (
                m.labels.iter().map(|l| (*l).to_owned()).collect(),
                m.kind == catalogue::Kind::Histogram,
            ),
        );
    }
    let api = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics-api.md"),
    )
    .unwrap();
    for line in api.lines().filter(|l| l.starts_with("| `flowlens_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        let labels = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        known.insert(name, (labels, cells[2] == "histogram"));
    }
    known
}

fn exprs() -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/flowlens.json"),
    )
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        out.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned()),
        );
    }
    out
}

/// The identifiers in `by (...)` groups and `{label="..."}` matchers of `expr`.
fn labels_used(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in expr.match_indices("by (") {
        let rest = &expr[i + 4..];
        let group = &rest[..rest.find(')').unwrap()];
        out.extend(group.split(',').map(|l| l.trim().to_owned()));
    }
    for (i, _) in expr.match_indices('{') {
        let rest = &expr[i + 1..];
        let inner = &rest[..rest.find('}').unwrap()];
        out.extend(
            inner
                .split(',')
                .filter_map(|m| m.split(['=', '!', '~']).next())
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty()),
        );
    }
    out
}

#[test]
fn every_query_uses_exported_metrics_and_their_labels_and_parses() {
    let known = exported();
    let exprs = exprs();
    assert!(exprs.len() >= 20, "{}", exprs.len());
    for expr in &exprs {
        let names: Vec<&str> = expr
            .match_indices("flowlens_")
            .map(|(i, _)| {
                let rest = &expr[i..];
                &rest[..rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len())]
            })
            .collect();
        assert!(!names.is_empty(), "{expr}");
        for name in names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| known.contains_key(*b)))
                .unwrap_or(name);
            let (labels, histogram) = known
                .get(base)
                .unwrap_or_else(|| panic!("{name} is not exported (in {expr})"));
            for label in labels_used(expr) {
                let special = (label == "le" || label == "quantile") && *histogram;
                assert!(
                    special || labels.contains(&label),
                    "{base} has no label {label} (in {expr})"
                );
            }
        }
    }

    if !support::netns::tool("promtool") {
        assert!(std::env::var_os("CI").is_none(), "promtool is missing");
        return;
    }
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let _ = write!(
            rules,
            "      - record: flowlens:dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        );
    }
    let dir = support::temp_dir("grafana-rules");
    std::fs::write(dir.join("rules.yml"), rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.join("rules.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
