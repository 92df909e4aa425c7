//! Shared by the capture-driven integration tests (`golden.rs`, `tshark_oracle.rs`): the
//! list of captures under `tests/data/pcap/`, running `flowlens-daemon decode`, and
//! RFC 3339 times.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

pub(crate) mod tshark;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Map, Value};

/// One capture case: the files given to one `decode` run, in order, and its golden.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Case {
    /// Name used in messages (the golden path without `.jsonl`).
    pub(crate) name: &'static str,
    /// Capture files, relative to `tests/data/pcap/`, decoded in this order.
    pub(crate) files: &'static [&'static str],
}

impl Case {
    /// The committed `decode --format jsonl` output next to the captures.
    pub(crate) fn golden(&self) -> PathBuf {
        data_dir().join(format!("{}.jsonl", self.name))
    }

    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| data_dir().join(f)).collect()
    }
}

/// Every capture `generate.sh` makes (see its header for how each was produced).
pub(crate) const CASES: &[Case] = &[
    Case {
        name: "netflow_v5/softflowd",
        files: &["netflow_v5/softflowd.pcap"],
    },
    Case {
        name: "netflow_v9/softflowd",
        files: &["netflow_v9/softflowd.pcap"],
    },
    Case {
        name: "netflow_v9/pmacct",
        files: &["netflow_v9/pmacct.pcap"],
    },
    Case {
        name: "netflow_v9/pmacct-sampled",
        files: &["netflow_v9/pmacct-sampled.pcap"],
    },
    Case {
        name: "ipfix/softflowd",
        files: &["ipfix/softflowd.pcap"],
    },
    Case {
        name: "ipfix/pmacct",
        files: &["ipfix/pmacct.pcap"],
    },
    Case {
        name: "ipfix/pmacct-sampled",
        files: &["ipfix/pmacct-sampled.pcap"],
    },
    // Template state across files: the first file holds only the templates.
    Case {
        name: "ipfix/template-then-data",
        files: &["ipfix/template-only.pcap", "ipfix/data-only.pcap"],
    },
    Case {
        name: "sflow_v5/pmacct",
        files: &["sflow_v5/pmacct.pcap"],
    },
    Case {
        name: "sflow_v5/pmacct-sampled",
        files: &["sflow_v5/pmacct-sampled.pcap"],
    },
];

/// Looks a case up by name; panics on a typo in a test.
pub(crate) fn case(name: &str) -> Case {
    *CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no capture case named {name}"))
}

pub(crate) fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcap")
}

/// What one `flowlens-daemon decode --format jsonl FILES...` run printed.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Decoded {
    /// The flow records, one JSON object per stdout line.
    pub(crate) fn records(&self, what: &str) -> Vec<Map<String, Value>> {
        self.stdout
            .lines()
            .enumerate()
            .map(|(i, line)| match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(m)) => m,
                other => panic!(
                    "{what}: stdout line {} is not a JSON object: {other:?}\n{line}",
                    i + 1
                ),
            })
            .collect()
    }

    /// The summary line on stderr (the last non-empty line), parsed.
    pub(crate) fn summary(&self, what: &str) -> Map<String, Value> {
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("{what}: decode printed no summary line on stderr"));
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) if !m.is_empty() => m,
            other => {
                panic!("{what}: last stderr line is not a JSON summary object: {other:?}\n{line}")
            }
        }
    }
}

/// Runs the daemon binary's decode command on `case`'s files; panics unless it exits 0.
pub(crate) fn decode(case: &Case) -> Decoded {
    let bin = env!("CARGO_BIN_EXE_flowlens-daemon");
    let output = Command::new(bin)
        .arg("decode")
        .arg("--format")
        .arg("jsonl")
        .args(case.paths())
        .output()
        .unwrap_or_else(|e| panic!("{}: running {bin}: {e}", case.name));
    let stdout = String::from_utf8(output.stdout).expect("decode stdout is UTF-8");
    let stderr = String::from_utf8(output.stderr).expect("decode stderr is UTF-8");
    assert!(
        output.status.success(),
        "{}: flowlens-daemon decode exited with {}\nstderr:\n{stderr}",
        case.name,
        output.status
    );
    Decoded { stdout, stderr }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).expect("month fits"),
        u32::try_from(day).expect("day fits"),
    )
}

/// Milliseconds since the epoch as the decode command prints them:
/// `2026-11-27T03:47:40.123Z`.
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).expect("date in range");
    let (y, m, d) = civil_from_days(days);
    let sod = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-1, 0, 59, 60, 11_016, 11_017, 20_000, 20_784] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(rfc3339_ms(1_795_751_814_123), "2026-11-27T03:56:54.123Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
