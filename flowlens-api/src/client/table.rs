//! Plain-text tables for the command line: a header, aligned columns, cells cut to a
//! width a terminal shows, and nothing a terminal would interpret (control characters
//! from names a network reported are replaced).

use std::fmt::Write as _;

use serde_json::Value;

/// Widest a cell is shown (the JSON output has everything).
const MAX_CELL: usize = 60;

/// A table being built.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: &[String]) {
        self.rows.push(cells.iter().map(|c| cell(c)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, lines ending in `\n`; columns two spaces apart, the last unpadded.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::new();
            for (i, c) in line.iter().enumerate().take(columns) {
                if i + 1 == columns {
                    text.push_str(c);
                } else {
                    text.push_str(c);
                    let pad = widths[i] - c.chars().count() + 2;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Characters a terminal would act on or that reorder or hide text: controls (C0,
/// DEL, C1), bidirectional overrides and isolates, zero-width characters.
pub fn hostile(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Text for a terminal: every [`hostile`] character but the line feed replaced by `?`.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c != '\n' && hostile(c) { '?' } else { c })
        .collect()
}

/// Serialized JSON with the [`hostile`] characters serde leaves as they are (DEL, C1,
/// bidi, zero-width) written as `\uXXXX` escapes: the same JSON, safe on a terminal.
pub fn json_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        // Outside strings JSON has only ASCII structure and whitespace, so every
        // hostile character is inside a string, where the escape means the same.
        if hostile(c) && !matches!(c, '\n' | '\r' | '\t') {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{u:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A cell: [`hostile`] characters replaced, at most [`MAX_CELL`] characters (`...`
/// ending a cut one).
pub fn cell(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if hostile(c) { '?' } else { c })
        .collect();
    if clean.chars().count() <= MAX_CELL {
        clean
    } else {
        let mut cut: String = clean.chars().take(MAX_CELL - 3).collect();
        cut.push_str("...");
        cut
    }
}

/// A JSON value as a cell: strings bare, null as `-`, arrays joined with `,`.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A byte count as people read it (1024-based, one decimal).
pub fn bytes(v: &Value) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let Some(n) = v.as_f64() else {
        return text(v);
    };
    let mut n = n;
    let mut unit = 0;
    while n >= 1024.0 && unit + 1 < UNITS.len() {
        n /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n:.0} B")
    } else {
        format!("{n:.1} {}", UNITS[unit])
    }
}

/// An RFC 3339 time cut to the second, `Z` kept (`2026-12-07T02:41:09Z`).
pub fn time(v: &Value) -> String {
    match v.as_str() {
        Some(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => t
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
            Err(_) => s.to_owned(),
        },
        None => text(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_and_cells_are_safe_for_a_terminal() {
        let mut t = Table::new(&["ID", "NAME", "NOTE"]);
        t.row(&["1".into(), "web\u{1b}[31m".into(), "x".repeat(80)]);
        t.row(&["22".into(), "db".into(), String::new()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "ID  NAME      NOTE");
        assert!(lines[1].starts_with("1   web?[31m  xxx"), "{out}");
        assert!(lines[1].ends_with("..."), "{out}");
        assert_eq!(lines[1].chars().count(), 4 + 10 + 60);
        assert_eq!(lines[2], "22  db", "no trailing spaces");
    }

    #[test]
    fn hostile_characters_never_reach_the_terminal() {
        let name = "evil\u{1b}]0;owned\u{7}\u{202e}gpj.exe\u{85}";
        assert_eq!(cell(name), "evil?]0;owned??gpj.exe?");
        assert_eq!(printable("a\nb\u{1b}c"), "a\nb?c");
        let json = serde_json::to_string(&json!({"name": name})).unwrap_or_default();
        let escaped = json_escaped(&json);
        assert!(!escaped.chars().any(hostile), "{escaped}");
        let back: Value = serde_json::from_str(&escaped).unwrap_or_default();
        assert_eq!(back["name"], name, "the same JSON");
    }

    #[test]
    fn values_read_as_people_read_them() {
        assert_eq!(text(&json!(["10.0.0.1", "::1"])), "10.0.0.1,::1");
        assert_eq!(text(&json!(null)), "-");
        assert_eq!(bytes(&json!(512)), "512 B");
        assert_eq!(bytes(&json!(1_572_864)), "1.5 MiB");
        assert_eq!(
            time(&json!("2026-12-07T02:41:09.123456+00:00")),
            "2026-12-07T02:41:09Z"
        );
    }
}
