//! Configuration references generated from the code, so that they cannot drift: every
//! key and its default from a configuration's `Default` (serialized in field order), and
//! its meaning from the doc comment of its field (through the type's JSON Schema, as
//! `schemars` derives it). Rendered as a commented example file and as a Markdown
//! table; each service's tests compare them with the files in the repository.

use std::fmt::Write as _;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

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

/// Every key of `defaults` (a configuration's defaults, serialized in field order),
/// with its meaning from `schema` (the configuration type's JSON Schema, whose
/// descriptions are the fields' doc comments), in order.
pub fn entries(defaults: &Yaml, schema: &Json) -> Vec<Entry> {
    let defs = schema.get("$defs").cloned().unwrap_or(Json::Null);
    let mut out = Vec::new();
    walk(defaults, schema, &defs, "", 0, &mut out);
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

/// A commented YAML file of `entries`: every key with its default, its meaning as
/// comments above it, after `header` (comment lines).
pub fn example_yaml(header: &str, entries: &[Entry]) -> String {
    let mut out = String::new();
    comment(&mut out, "", header);
    let mut previous_depth = 0;
    for e in entries {
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

/// A Markdown reference of `entries`: `title`, `intro`, then a table of keys per
/// top-level section.
pub fn markdown(title: &str, intro: &str, entries: &[Entry]) -> String {
    let mut out = format!(
        "# {title}\n\n<!-- Generated from the code (the typed defaults and the fields' doc \
         comments); a test fails when it is stale (FLOWLENS_BLESS=1 rewrites it). -->\n\n\
         {intro}\n"
    );
    for e in entries {
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

/// Whether the generated file at `path` holds `text`: with `FLOWLENS_BLESS` set, writes
/// it first. `Err` says how to bring it up to date (`bless` is the command).
///
/// # Errors
/// The file is stale (or cannot be written when blessing).
pub fn check_current(path: &std::path::Path, text: &str, bless: &str) -> Result<(), String> {
    if std::env::var_os("FLOWLENS_BLESS").is_some() {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if std::fs::read_to_string(path).unwrap_or_default() == text {
        Ok(())
    } else {
        Err(format!(
            "{} is stale: run `FLOWLENS_BLESS=1 {bless}`",
            path.display()
        ))
    }
}
