//! Replays every input the fuzzers ever crashed on (`tests/data/fuzz-regressions/`).
//!
//! A file is named `<fuzz target>-<short hash>.bin`; the target says how its bytes
//! become a datagram (forced version bytes, exporter and receive time from the first
//! byte), exactly as in the fuzz targets, whose shared code this test includes. Each
//! input is decoded by a fresh decoder, then all of them in name order by one decoder
//! (as the fuzzer's persistent decoder would), and must neither panic nor break the
//! decoder's accounting invariants; `Ok` and `Err(DecodeError)` are both fine.

#[path = "../../fuzz/src/lib.rs"]
#[allow(unreachable_pub, reason = "public in the fuzz crate, private here")]
mod fuzz_input;

use std::fs;
use std::path::{Path, PathBuf};

use flowlens_daemon::decode::Decoder;
use fuzz_input::{Target, decode_checked, fuzz_config, fuzz_one};

/// Every regression input with the target it came from, sorted by file name.
fn regressions() -> Vec<(PathBuf, Target, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions");
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut inputs: Vec<_> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "bin"))
        .map(|path| {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let target_name = name.split('-').next().unwrap_or_default();
            let target = Target::from_name(target_name).unwrap_or_else(|| {
                panic!(
                    "{}: name must start with a fuzz target and '-'",
                    path.display()
                )
            });
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, target, bytes)
        })
        .collect();
    inputs.sort_by(|a, b| a.0.cmp(&b.0));
    inputs
}

#[test]
fn each_regression_input_decodes_or_errors_with_a_fresh_decoder() {
    for (path, target, bytes) in regressions() {
        let mut decoder = Decoder::new(fuzz_config());
        let mut payload = Vec::new();
        let mut out = Vec::new();
        let datagram = target.datagram(&bytes, &mut payload);
        match decode_checked(&mut decoder, &datagram, &mut out) {
            Ok(n) => eprintln!("{}: ok, {n} records", path.display()),
            Err(e) => eprintln!("{}: {} ({e})", path.display(), e.reason()),
        }
    }
}

#[test]
fn all_regression_inputs_in_a_row_through_one_decoder() {
    for (_, target, bytes) in regressions() {
        fuzz_one(target, &bytes);
    }
}
