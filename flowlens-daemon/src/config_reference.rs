//! The configuration's reference, generated from the code so that it cannot drift:
//! every key and its default from [`Config::default`] (serialized in field order), and
//! its meaning from the doc comment of its field (through the types' JSON Schema).
//! Rendered as the commented example `deploy/flowlens-daemon.example.yaml` and as
//! `docs/configuration-daemon.md`; tests fail when either is stale or a key has no
//! meaning written.

use std::fmt::Write as _;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::config::Config;

/// One key of the reference.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Dotted path (`ingestion.backpressure.enabled`).
    pub path: String,
    pub depth: usize,
    /// The default; `None` for a section (its keys follow).
    pub default: Option<Yaml>,
    /// The field's doc comment, if it has one.
    pub meaning: Option<String>,
}

/// Every key, in the order the configuration serializes them.
pub fn entries() -> Vec<Entry> {
    let defaults = serde_yaml::to_value(Config::default()).unwrap_or(Yaml::Null);
    let schema = schemars::schema_for!(Config).to_value();
    let defs = schema.get("$defs").cloned().unwrap_or(Json::Null);
    let mut out = Vec::new();
    walk(&defaults, &schema, &defs, "", 0, &mut out);
    out
}

fn resolve<'a>(node: &'a Json, defs: &'a Json) -> &'a Json {
    if let Some(r) = node.get("$ref").and_then(Json::as_str) {
        let name = r.rsplit('/').next().unwrap_or_default();
        return defs.get(name).map_or(node, |d| resolve(d, defs));
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = node.get(key).and_then(Json::as_array)
            && let Some(first) = list
                .iter()
                .find(|s| s.get("type").and_then(Json::as_str) != Some("null"))
        {
            return resolve(first, defs);
        }
    }
    node
}

fn walk(
    value: &Yaml,
    schema: &Json,
    defs: &Json,
    prefix: &str,
    depth: usize,
    out: &mut Vec<Entry>,
) {
    let schema = resolve(schema, defs);
    let (Yaml::Mapping(map), Some(props)) = (value, schema.get("properties")) else {
        return;
    };
    for (k, v) in map {
        let Some(key) = k.as_str() else { continue };
        let prop = props.get(key).unwrap_or(&Json::Null);
        let meaning = prop
            .get("description")
            .or_else(|| resolve(prop, defs).get("description"))
            .and_then(Json::as_str)
            .map(str::to_owned);
        let path = format!("{prefix}{key}");
        let section = matches!(v, Yaml::Mapping(m) if !m.is_empty())
            && resolve(prop, defs).get("properties").is_some();
        out.push(Entry {
            path: path.clone(),
            depth,
            default: (!section).then(|| v.clone()),
            meaning,
        });
        if section {
            walk(v, prop, defs, &format!("{path}."), depth + 1, out);
        }
    }
}

/// `text` as comment lines of at most 88 columns at `indent`.
fn comment(out: &mut String, indent: &str, text: &str) {
    for paragraph in text.split("\n\n") {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && indent.len() + 2 + line.len() + 1 + word.len() > 88 {
                let _ = writeln!(out, "{indent}# {line}");
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            let _ = writeln!(out, "{indent}# {line}");
        }
    }
}

fn yaml_scalar(v: &Yaml) -> String {
    serde_yaml::to_string(v)
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

/// The commented example configuration: every key with its default.
pub fn example_yaml() -> String {
    let mut out = String::from(
        "# flowlens-daemon: every configuration key with its default and what it means.\n\
         # Generated from the code (a test fails when it is stale; FLOWLENS_BLESS=1\n\
         # rewrites it). Every key is optional; FLOWLENS_<SECTION>__<KEY> variables\n\
         # override the file, and `flowlens-daemon check-config FILE` shows the result.\n",
    );
    let mut previous_depth = 0;
    for e in entries() {
        let indent = "  ".repeat(e.depth);
        if e.depth == 0 || (e.default.is_none() && previous_depth >= e.depth) {
            out.push('\n');
        }
        previous_depth = e.depth;
        if let Some(m) = &e.meaning {
            comment(&mut out, &indent, m);
        }
        let key = e.path.rsplit('.').next().unwrap_or_default();
        match &e.default {
            None => {
                let _ = writeln!(out, "{indent}{key}:");
            }
            Some(v) => {
                let text = yaml_scalar(v);
                if text.contains('\n') {
                    let _ = writeln!(out, "{indent}{key}:");
                    for line in text.lines() {
                        let _ = writeln!(out, "{indent}  {line}");
                    }
                } else {
                    let _ = writeln!(out, "{indent}{key}: {text}");
                }
            }
        }
    }
    out
}

/// `docs/configuration-daemon.md`: a table of every key per section.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Configuration of flowlens-daemon\n\n<!-- Generated from the code (the typed \
         defaults and the fields' doc comments); a test fails when it is stale \
         (FLOWLENS_BLESS=1 rewrites it). -->\n\nEvery key is optional. The file is YAML \
         (`--config FILE`); `FLOWLENS_<SECTION>__<KEY>` environment variables (nested keys \
         joined by `__`) override it; `flowlens-daemon check-config FILE` prints the \
         effective result. A commented file with every default is \
         [deploy/flowlens-daemon.example.yaml](../deploy/flowlens-daemon.example.yaml).\n",
    );
    for e in entries() {
        if e.depth == 0 {
            let _ = write!(out, "\n## `{}`\n\n", e.path);
            if let Some(m) = &e.meaning {
                let _ = writeln!(out, "{}\n", m.replace('\n', " "));
            }
            if e.default.is_none() {
                out.push_str("| key | default | meaning |\n|---|---|---|\n");
                continue;
            }
            out.push_str("| key | default | meaning |\n|---|---|---|\n");
        }
        let Some(v) = &e.default else {
            let _ = writeln!(
                out,
                "| `{}` | | {} |",
                e.path,
                cell(e.meaning.as_deref().unwrap_or_default())
            );
            continue;
        };
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {} |",
            e.path,
            yaml_scalar(v).replace('\n', " ").replace('|', "\\|"),
            cell(e.meaning.as_deref().unwrap_or_default())
        );
    }
    out
}

fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn current(relative: &str, text: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
        if std::env::var_os("FLOWLENS_BLESS").is_some() {
            std::fs::write(&path, text).unwrap();
        }
        assert!(
            std::fs::read_to_string(&path).unwrap_or_default() == text,
            "{} is stale: FLOWLENS_BLESS=1 cargo test -p flowlens-daemon --lib config_reference",
            path.display()
        );
    }

    #[test]
    fn the_example_and_the_reference_are_current_and_every_key_is_explained() {
        let entries = entries();
        assert!(entries.len() > 100, "{}", entries.len());
        let unexplained: Vec<&str> = entries
            .iter()
            .filter(|e| e.meaning.as_deref().is_none_or(str::is_empty))
            .map(|e| e.path.as_str())
            .collect();
        assert!(
            unexplained.is_empty(),
            "keys without a doc comment: {unexplained:?}"
        );
        current("../deploy/flowlens-daemon.example.yaml", &example_yaml());
        current("../docs/configuration-daemon.md", &markdown());
    }

    #[test]
    fn the_example_is_the_defaults() {
        let dir = std::env::temp_dir().join(format!("flowlens-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("example.yaml");
        std::fs::write(&file, example_yaml()).unwrap();
        let loaded = Config::load(Some(&file), std::iter::empty()).unwrap();
        assert_eq!(loaded, Config::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
