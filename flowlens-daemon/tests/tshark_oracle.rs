//! tshark as the oracle: for every capture under `tests/data/pcap/`, each flow record
//! `flowlens-daemon decode --format jsonl` prints must match what `tshark -T json` shows
//! for that record, field by field and in order, and the record counts must be equal.
//! The mapping from tshark's fields to the decode command's keys is documented in
//! `common/tshark.rs`.
//!
//! Without tshark the test is skipped with a message, unless `CI` is set, where a missing
//! tshark fails it. `ORACLE_DUMP=1` prints tshark's side of every record to stderr.

mod common;

use std::fmt::Write as _;
use std::net::IpAddr;

use common::tshark::{self, Exp, Expected, FIELDS};
use common::{Case, case};
use serde_json::{Map, Value};

/// How many field differences a failure lists.
const SHOWN_DIFFS: usize = 40;

/// Whether the oracle can run here; panics when tshark is missing on CI.
fn tshark_ready() -> bool {
    if tshark::available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "tshark is not installed but CI is set: the tshark oracle test cannot be skipped on CI"
    );
    eprintln!(
        "SKIPPED: tshark is not installed (apt-get install tshark); set CI to make this fail"
    );
    false
}

/// Same value as far as the contract goes: IP addresses compare parsed (so `::1` and
/// `0:0:0:0:0:0:0:1` agree), everything else exactly.
fn same(expected: &Value, actual: &Value) -> bool {
    if let (Value::String(e), Value::String(a)) = (expected, actual)
        && let (Ok(e), Ok(a)) = (e.parse::<IpAddr>(), a.parse::<IpAddr>())
    {
        return e == a;
    }
    expected == actual
}

fn compare_record(
    case_name: &str,
    index: usize,
    expected: &Expected,
    actual: &Map<String, Value>,
    diffs: &mut Vec<String>,
) {
    for key in actual.keys() {
        if !FIELDS.contains(&key.as_str()) {
            diffs.push(format!(
                "{case_name}: record {index} ({}): unexpected key {key:?} in decoder output",
                expected.location
            ));
        }
    }
    for field in FIELDS {
        let Some(Exp::Is(want)) = expected.get(field) else {
            continue;
        };
        match actual.get(field) {
            None => diffs.push(format!(
                "{case_name}: record {index} ({}): field {field}: missing in decoder output, tshark says {want}",
                expected.location
            )),
            Some(got) if !same(want, got) => diffs.push(format!(
                "{case_name}: record {index} ({}): field {field}: decoder {got}, tshark {want}",
                expected.location
            )),
            Some(_) => {}
        }
    }
}

fn check(name: &str) {
    if !tshark_ready() {
        return;
    }
    let case: Case = case(name);
    let json = tshark::dissect(case.name, &case.paths());
    let expected = tshark::expected_records(&json);
    if std::env::var_os("ORACLE_DUMP").is_some() {
        for (i, e) in expected.iter().enumerate() {
            let line: Vec<String> = e
                .fields
                .iter()
                .map(|(k, v)| match v {
                    Exp::Is(v) => format!("{k}={v}"),
                    Exp::Unknown(why) => format!("{k}=? ({why})"),
                })
                .collect();
            eprintln!("{name} #{i} [{}]: {}", e.location, line.join(" "));
        }
    }
    // tshark must have found what every flow record has; if not, its field names changed
    // and comparing would be comparing nulls.
    for (i, e) in expected.iter().enumerate() {
        for key in [
            "src_ip",
            "dst_ip",
            "protocol",
            "bytes",
            "packets",
            "export_time",
        ] {
            assert!(
                matches!(e.get(key), Some(Exp::Is(v)) if !v.is_null()),
                "{name}: tshark record {i} ({}) has no {key}; did tshark's field names change?",
                e.location
            );
        }
    }
    let decoded = common::decode(&case);
    let _ = decoded.summary(case.name);
    let actual = decoded.records(case.name);
    assert!(
        !expected.is_empty(),
        "{name}: tshark found no flow records; is the capture right?"
    );

    let mut diffs = Vec::new();
    for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
        compare_record(name, i, e, a, &mut diffs);
    }
    let unknown: usize = expected
        .iter()
        .flat_map(|e| &e.fields)
        .filter(|(_, v)| matches!(v, Exp::Unknown(_)))
        .count();
    eprintln!(
        "{name}: tshark {} records, decoder {} records, {} field differences, {unknown} fields tshark cannot tell",
        expected.len(),
        actual.len(),
        diffs.len()
    );
    let mut msg = String::new();
    if expected.len() != actual.len() {
        let _ = writeln!(
            msg,
            "{name}: record count differs: decoder {}, tshark {}",
            actual.len(),
            expected.len()
        );
        if let Some(extra) = expected.get(actual.len()) {
            let _ = writeln!(msg, "  first record only tshark has: {}", extra.location);
        }
        if let Some(extra) = actual.get(expected.len()) {
            let _ = writeln!(msg, "  first record only the decoder has: {extra:?}");
        }
    }
    for d in diffs.iter().take(SHOWN_DIFFS) {
        let _ = writeln!(msg, "{d}");
    }
    if diffs.len() > SHOWN_DIFFS {
        let _ = writeln!(
            msg,
            "... and {} more differences",
            diffs.len() - SHOWN_DIFFS
        );
    }
    assert!(msg.is_empty(), "decoder disagrees with tshark:\n{msg}");
}

#[test]
fn netflow_v5_softflowd() {
    check("netflow_v5/softflowd");
}

#[test]
fn netflow_v9_softflowd() {
    check("netflow_v9/softflowd");
}

#[test]
fn netflow_v9_pmacct() {
    check("netflow_v9/pmacct");
}

#[test]
fn netflow_v9_pmacct_sampled() {
    check("netflow_v9/pmacct-sampled");
}

#[test]
fn ipfix_softflowd() {
    check("ipfix/softflowd");
}

#[test]
fn ipfix_pmacct() {
    check("ipfix/pmacct");
}

#[test]
fn ipfix_pmacct_sampled() {
    check("ipfix/pmacct-sampled");
}

#[test]
fn ipfix_template_then_data() {
    check("ipfix/template-then-data");
}

#[test]
fn sflow_v5_pmacct() {
    check("sflow_v5/pmacct");
}

#[test]
fn sflow_v5_pmacct_sampled() {
    check("sflow_v5/pmacct-sampled");
}

/// The comparison is not vacuous: changing any field of a decoded record that tshark
/// determines is reported, naming that field.
#[test]
fn oracle_reports_each_changed_field() {
    if !tshark_ready() {
        return;
    }
    let case = case("netflow_v9/pmacct");
    let expected = tshark::expected_records(&tshark::dissect(case.name, &case.paths()));
    let actual = common::decode(&case).records(case.name);
    let (e, a) = (&expected[0], &actual[0]);
    let mut diffs = Vec::new();
    compare_record(case.name, 0, e, a, &mut diffs);
    assert!(diffs.is_empty(), "record 0 should agree: {diffs:?}");
    for field in FIELDS {
        let mut changed = a.clone();
        let slot = changed.get_mut(field).expect("decoder prints every key");
        *slot = match slot {
            Value::Number(n) => Value::from(n.as_u64().expect("unsigned") + 1),
            Value::String(s) => Value::String(format!("{s}x")),
            _ => Value::from(0),
        };
        let mut diffs = Vec::new();
        compare_record(case.name, 0, e, &changed, &mut diffs);
        assert!(
            diffs.iter().any(|d| d.contains(&format!("field {field}:"))),
            "changing {field} went unnoticed: {diffs:?}"
        );
    }
    let mut extra = a.clone();
    extra.insert("surprise".into(), Value::Null);
    let mut diffs = Vec::new();
    compare_record(case.name, 0, e, &extra, &mut diffs);
    assert!(
        diffs.iter().any(|d| d.contains("surprise")),
        "an extra key went unnoticed"
    );
}

/// Every capture in the case list is tested above (a new case needs a test here too).
#[test]
fn every_case_has_a_test() {
    let source = include_str!("tshark_oracle.rs");
    for c in common::CASES {
        assert!(
            source.contains(&format!("check(\"{}\")", c.name)),
            "capture case {} has no oracle test",
            c.name
        );
    }
}
