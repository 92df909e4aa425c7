//! Embeds the web console's bundle when `cargo xtask build-console` has made it.
//!
//! The bundle lives in `console/dist/` (index.html, `assets/*` with content hashes in
//! their names, and a `.gz` beside each compressible file). When `index.html` is
//! there, every file is compiled into the binary with `include_bytes!`, so a package
//! or a copied binary serves the console with nothing beside it. When it is not (a
//! machine without Node), the list is empty and the API serves a page that says how
//! to build it: `cargo build` never needs Node.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dist = manifest.join("console").join("dist");
    // The directory is in git (with only its .gitignore), so this is never a missing
    // path, which cargo would treat as changed on every build.
    println!("cargo:rerun-if-changed=console/dist");
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();
    let mut out = String::from(
        "/// The console's files: path under `console/dist/` and contents.\n\
         pub(crate) static ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for (rel, abs) in &files {
        writeln!(out, "    ({rel:?}, include_bytes!({abs:?})),").expect("writing to a String");
    }
    out.push_str("];\n");
    let target =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("console_assets.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}

/// Every regular file under `dir` except dotfiles, as (path relative to `root` with
/// `/` separators, absolute path).
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.is_file() {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path.to_string_lossy().into_owned()));
        }
    }
}
