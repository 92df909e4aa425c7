//! The daemon's configuration reference, generated from the code (see
//! `flowlens_docgen`): the commented example `deploy/flowlens-daemon.example.yaml` and
//! `docs/configuration-daemon.md`; tests fail when either is stale, a key has no
//! meaning written, or the example does not load back as the defaults.

use flowlens_docgen::Entry;

use crate::config::Config;

/// Every key of the daemon's configuration, in order.
pub fn entries() -> Vec<Entry> {
    flowlens_docgen::entries(
        &serde_yaml::to_value(Config::default()).unwrap_or(serde_yaml::Value::Null),
        &schemars::schema_for!(Config).to_value(),
    )
}

/// `deploy/flowlens-daemon.example.yaml`.
pub fn example_yaml() -> String {
    flowlens_docgen::example_yaml(
        "flowlens-daemon: every configuration key with its default and what it means. \
         Generated from the code (a test fails when it is stale; FLOWLENS_BLESS=1 rewrites \
         it). Every key is optional; FLOWLENS_<SECTION>__<KEY> variables override the \
         file, and `flowlens-daemon check-config FILE` shows the result.",
        &entries(),
    )
}

/// `docs/configuration-daemon.md`.
pub fn markdown() -> String {
    flowlens_docgen::markdown(
        "Configuration of flowlens-daemon",
        "Every key is optional. The file is YAML (`--config FILE`); \
         `FLOWLENS_<SECTION>__<KEY>` environment variables (nested keys joined by `__`) \
         override it; `flowlens-daemon check-config FILE` prints the effective result. A \
         commented file with every default is \
         [deploy/flowlens-daemon.example.yaml](../deploy/flowlens-daemon.example.yaml).",
        &entries(),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn current(relative: &str, text: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
        let bless = "cargo test -p flowlens-daemon --lib config_reference";
        flowlens_docgen::check_current(&path, text, bless).unwrap();
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
