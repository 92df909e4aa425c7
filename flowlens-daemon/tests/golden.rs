//! Golden outputs: `flowlens-daemon decode --format jsonl` on every capture under
//! `tests/data/pcap/` must print exactly the committed `<case>.jsonl`, and a summary
//! line on stderr. `UPDATE_GOLDEN=1` rewrites the goldens instead of comparing; only do
//! that after `tshark_oracle` agrees with the new output.

mod common;

use common::{Case, case};

fn update() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

fn check(name: &str) {
    let case: Case = case(name);
    let decoded = common::decode(&case);
    let summary = decoded.summary(case.name);
    assert!(
        summary.contains_key("summary"),
        "{name}: stderr summary line has no \"summary\" object: {summary:?}"
    );
    let golden = case.golden();
    if update() {
        std::fs::write(&golden, &decoded.stdout)
            .unwrap_or_else(|e| panic!("{name}: writing {}: {e}", golden.display()));
        eprintln!("{name}: wrote {}", golden.display());
        return;
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{name}: reading {}: {e} (generate it with UPDATE_GOLDEN=1 once the tshark oracle agrees)",
            golden.display()
        )
    });
    if want == decoded.stdout {
        return;
    }
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), decoded.stdout.lines().collect());
    let first = w
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(w.len().min(g.len()));
    panic!(
        "{name}: decode output differs from {} (golden {} lines, decoder {} lines); first difference at line {}:\n  golden:  {}\n  decoder: {}\n(UPDATE_GOLDEN=1 rewrites the goldens)",
        golden.display(),
        w.len(),
        g.len(),
        first + 1,
        w.get(first).unwrap_or(&"<end of file>"),
        g.get(first).unwrap_or(&"<end of output>"),
    );
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

/// The split pair is `ipfix/pmacct.pcap` cut after its template-only first datagram:
/// decoding the two files in order must give exactly what the whole capture gives.
#[test]
fn template_state_carries_across_files() {
    let split = common::decode(&case("ipfix/template-then-data"));
    let whole = common::decode(&case("ipfix/pmacct"));
    assert!(!whole.stdout.is_empty(), "ipfix/pmacct decoded to nothing");
    assert_eq!(
        split.stdout, whole.stdout,
        "template-only.pcap + data-only.pcap must decode like ipfix/pmacct.pcap"
    );
}

/// Every capture in the case list is tested above (a new case needs a test here too).
#[test]
fn every_case_has_a_test() {
    let source = include_str!("golden.rs");
    for c in common::CASES {
        assert!(
            source.contains(&format!("check(\"{}\")", c.name)),
            "capture case {} has no golden test",
            c.name
        );
    }
}
