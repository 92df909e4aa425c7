//! The oracle: what `tshark -T json` says each flow record of a capture contains, mapped
//! onto the keys of `flowlens-daemon decode --format jsonl`.
//!
//! tshark is run as `tshark -n -r FILE -T json --no-duplicate-keys -x` (`-x` adds a
//! `<field>_raw` array `[hex, offset, length, ..]` next to every field; the offsets put
//! sets, records and samples back in wire order, since `serde_json` maps sort keys).
//!
//! Mapping rules, per protocol (tshark field names in brackets):
//! * `NetFlow` v5: one record per `pdu N/M`; times are uptimes
//!   (`cflow.timestart`/`timeend`) converted as
//!   `export_time - ((sysuptime - uptime) mod 2^32)`, export time `unix_secs` +
//!   `unix_nsecs`; `sampling_rate` is the header's 14-bit interval, 0 meaning 1.
//! * `NetFlow` v9 / IPFIX: one record per `Flow N` of a data set whose template is a
//!   data template (options records feed sampling and system-init state instead).
//!   v9 uptimes convert like v5 (header `sysuptime`, `unix_secs`); IPFIX
//!   `flowStart/EndSysUpTime` (IE 22/21) are relative to `systemInitTimeMilliseconds`
//!   (IE 160, an options record): `sys_init + uptime`. Absolute times
//!   (`cflow.abstimestart`/`abstimeend`) are taken as they are, to the millisecond.
//!   tshark 4.0 quirk: an uptime field whose value is 0 is shown as `abstimestart`
//!   "Jan  1, 1970 00:00:00" (packet-netflow.c adds `hf_cflow_abstimestart` when
//!   `msec_start == 0`); when the template says the field is IE 22/21 that is uptime 0.
//!   `sampling_rate`: the data record's sampler id looked up in the options records
//!   (`cflow.sampler_id` -> `cflow.sampler_random_interval`/`sampling_interval`),
//!   else an options record without sampler id (`sampling_interval`, or
//!   `(sampling_packet_interval + sampling_packet_space) / sampling_packet_interval`),
//!   else 1.
//! * ICMP/ICMPv6 (`NetFlow` convention): `dst_port` is `type * 256 + code` when the
//!   record carries an ICMP type/code field (IE 32 `cflow.icmp_type_code_ipv4`, IE 139
//!   `cflow.icmp_ipv6_type`/`code`), else the exported L4 destination port.
//! * sFlow v5: one record per flow sample (format 1 or 3, enterprise 0); addresses,
//!   protocol, ports and TCP flags from the sampled header tshark dissects
//!   (`ip`/`ipv6`, `tcp`/`udp`, `icmp`/`icmpv6` as for `NetFlow` with `src_port` 0),
//!   `bytes` = `sflow_245.header.frame_length`, `packets` = 1, `exporter_ip` = the
//!   agent address, `export_time` = the frame's capture time (floor to ms), no flow
//!   times; interfaces per the sFlow v5 `interface` encoding: format 0 is an ifIndex
//!   except 0x3FFFFFFF, "no input or output interface" (the packet originates or
//!   terminates in the device), which is null, as are formats 1 (discarded) and 2
//!   (multiple); AS numbers from the extended gateway record (`srcAS`, and the last AS of
//!   the destination path for `dst_as`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

use super::{days_from_civil, rfc3339_ms};

/// The decode command's keys, in its output order (and the order compared).
pub(crate) const FIELDS: [&str; 18] = [
    "proto",
    "exporter_ip",
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "protocol",
    "bytes",
    "packets",
    "tcp_flags",
    "input_interface",
    "output_interface",
    "src_as",
    "dst_as",
    "sampling_rate",
    "flow_start",
    "flow_end",
    "export_time",
];

/// One field as tshark sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Exp {
    /// The decoder must print exactly this (IP strings compare as addresses).
    Is(Value),
    /// tshark's output does not determine the value; not compared, reason given.
    Unknown(String),
}

/// One flow record according to tshark.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    /// Where it is: frame number and tshark's labels of the set/record.
    pub(crate) location: String,
    pub(crate) fields: Vec<(&'static str, Exp)>,
}

impl Expected {
    pub(crate) fn get(&self, key: &str) -> Option<&Exp> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// Whether a `tshark` binary runs.
pub(crate) fn available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs tshark on `files` (merged in order with `mergecap -a` when there are several,
/// so template state carries over like in the decode command) and returns its JSON.
pub(crate) fn dissect(case_name: &str, files: &[PathBuf]) -> Value {
    let merged;
    let input: &Path = if let [only] = files {
        only
    } else {
        merged = std::env::temp_dir().join(format!(
            "flowlens-oracle-{}-{}.pcap",
            std::process::id(),
            case_name.replace('/', "_")
        ));
        let out = Command::new("mergecap")
            .arg("-a")
            .arg("-F")
            .arg("pcap")
            .arg("-w")
            .arg(&merged)
            .args(files)
            .output()
            .unwrap_or_else(|e| panic!("{case_name}: running mergecap: {e}"));
        assert!(
            out.status.success(),
            "{case_name}: mergecap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        &merged
    };
    let out = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(input)
        .args(["-T", "json", "--no-duplicate-keys", "-x"])
        // The standard ports, in case a local preference moved them.
        .args(["-d", "udp.port==2055,cflow", "-d", "udp.port==4739,cflow"])
        .args(["-d", "udp.port==6343,sflow"])
        .output()
        .unwrap_or_else(|e| panic!("{case_name}: running tshark: {e}"));
    if files.len() > 1 {
        let _ = std::fs::remove_file(input);
    }
    assert!(
        out.status.success(),
        "{case_name}: tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{case_name}: tshark JSON does not parse: {e}"))
}

// ---- JSON access -------------------------------------------------------------------

/// A string field directly in `obj` (the first one when tshark repeated it).
fn text<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    match obj.get(key)? {
        Value::String(s) => Some(s),
        Value::Array(a) => a.first().and_then(Value::as_str),
        _ => None,
    }
}

/// Every string value of `key` directly in `obj`.
fn texts<'a>(obj: &'a Map<String, Value>, key: &str) -> Vec<&'a str> {
    match obj.get(key) {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A field in `obj` or in one of its `*_tree` subtrees (tshark nests generated and
/// bit-field items there), depth first.
fn deep<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    if let Some(v) = text(obj, key) {
        return Some(v);
    }
    obj.iter()
        .filter(|(k, _)| k.ends_with("_tree"))
        .find_map(|(_, v)| v.as_object().and_then(|o| deep(o, key)))
}

fn object<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    match obj.get(key)? {
        Value::Object(o) => Some(o),
        Value::Array(a) => a.first().and_then(Value::as_object),
        _ => None,
    }
}

/// Parses tshark's rendering of an unsigned number: decimal or 0x-hex.
fn number(s: &str) -> Option<u64> {
    s.strip_prefix("0x")
        .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
}

fn num(obj: &Map<String, Value>, key: &str) -> Option<u64> {
    deep(obj, key).and_then(number)
}

/// Object-valued children of `obj` (duplicated labels expanded) in wire order: by the
/// smallest offset among their direct `_raw` fields, then by the first number in the
/// label ("Flow 12", "pdu 3/29", "Set 2 [..]").
fn children(obj: &Map<String, Value>) -> Vec<(&str, &Map<String, Value>)> {
    // (raw offset, number in the label, index among duplicates, label, object)
    type Child<'a> = (Option<u64>, u64, usize, &'a str, &'a Map<String, Value>);
    let mut out: Vec<Child<'_>> = Vec::new();
    for (label, v) in obj {
        let items: Vec<&Map<String, Value>> = match v {
            Value::Object(o) => vec![o],
            Value::Array(a) => a.iter().filter_map(Value::as_object).collect(),
            _ => continue,
        };
        if label.ends_with("_tree") {
            continue;
        }
        for (dup, o) in items.into_iter().enumerate() {
            out.push((min_offset(o), label_number(label), dup, label.as_str(), o));
        }
    }
    out.sort_by_key(|&(off, n, dup, _, _)| (off.unwrap_or(u64::MAX), n, dup));
    out.into_iter().map(|(_, _, _, l, o)| (l, o)).collect()
}

fn min_offset(obj: &Map<String, Value>) -> Option<u64> {
    obj.iter()
        .filter(|(k, _)| k.ends_with("_raw"))
        .filter_map(|(_, v)| v.as_array()?.get(1)?.as_u64())
        .min()
}

fn label_number(label: &str) -> u64 {
    label
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ---- time --------------------------------------------------------------------------

/// "12.999000000" (seconds, tshark's relative time) -> 12999 ms.
fn rel_ms(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().ok()?;
    let mut ms = 0;
    for (i, c) in frac.chars().chain("000".chars()).take(3).enumerate() {
        let d = u64::from(c.to_digit(10)?);
        ms += d * [100, 10, 1][i];
    }
    Some(secs * 1000 + ms)
}

/// "1795753363.224567000" (epoch seconds) -> ms, truncated.
fn epoch_ms(s: &str) -> Option<u64> {
    rel_ms(s)
}

/// tshark's absolute UTC time, "Nov 27, 2026 04:21:38.418000000 UTC" -> ms, truncated.
fn abs_ms(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut it = s.split_whitespace();
    let mon = it.next()?;
    let month = u32::try_from(MONTHS.iter().position(|m| *m == mon)? + 1).ok()?;
    let day: u32 = it.next()?.trim_end_matches(',').parse().ok()?;
    let year: i64 = it.next()?.parse().ok()?;
    let clock = it.next()?;
    if it.next()? != "UTC" {
        return None;
    }
    let mut hms = clock.splitn(3, ':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec_ms = rel_ms(hms.next()?)?;
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(days * 86_400_000 + h * 3_600_000 + m * 60_000 + sec_ms)
}

fn time_value(ms: u64) -> Exp {
    Exp::Is(Value::String(rfc3339_ms(ms)))
}

// ---- extraction --------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TemplateKind {
    Data,
    Options,
}

#[derive(Debug, Clone)]
struct Template {
    kind: TemplateKind,
    /// Information element ids in field order (enterprise bit stripped).
    fields: Vec<u64>,
}

/// State of one (exporter, version, source id / observation domain).
#[derive(Debug, Default)]
struct Domain {
    templates: HashMap<u64, Template>,
    samplers: HashMap<u64, u64>,
    default_rate: Option<u64>,
    sys_init_ms: Option<u64>,
}

/// Turns tshark's JSON for a whole capture into the records the decoder must print.
pub(crate) fn expected_records(json: &Value) -> Vec<Expected> {
    let mut domains: HashMap<(String, u64, u64), Domain> = HashMap::new();
    let mut out = Vec::new();
    let packets = json.as_array().expect("tshark -T json prints an array");
    for (i, pkt) in packets.iter().enumerate() {
        let layers = pkt
            .pointer("/_source/layers")
            .and_then(Value::as_object)
            .expect("tshark packet has _source.layers");
        let frame_no = i + 1;
        let frame_ms = layers
            .get("frame")
            .and_then(Value::as_object)
            .and_then(|f| text(f, "frame.time_epoch"))
            .and_then(epoch_ms)
            .expect("frame.time_epoch");
        let exporter = object(layers, "ip")
            .and_then(|ip| text(ip, "ip.src"))
            .or_else(|| object(layers, "ipv6").and_then(|ip| text(ip, "ipv6.src")))
            .unwrap_or("?")
            .to_owned();
        if let Some(cflow) = object(layers, "cflow") {
            cflow_records(frame_no, &exporter, cflow, &mut domains, &mut out);
        }
        if let Some(sflow) = object(layers, "sflow") {
            sflow_records(frame_no, frame_ms, sflow, &mut out);
        }
    }
    out
}

fn cflow_records(
    frame: usize,
    exporter: &str,
    cflow: &Map<String, Value>,
    domains: &mut HashMap<(String, u64, u64), Domain>,
    out: &mut Vec<Expected>,
) {
    let version = num(cflow, "cflow.version").expect("cflow.version");
    match version {
        5 => {
            let export_ms = num(cflow, "cflow.unix_secs").expect("v5 unix_secs") * 1000
                + num(cflow, "cflow.unix_nsecs").unwrap_or(0) / 1_000_000;
            let uptime = deep(cflow, "cflow.sysuptime")
                .and_then(rel_ms)
                .expect("v5 sysuptime");
            let interval = num(cflow, "cflow.samplerate").unwrap_or(0) & 0x3FFF;
            let rate = if interval == 0 { 1 } else { interval };
            for (label, pdu) in children(cflow) {
                if !label.starts_with("pdu") {
                    continue;
                }
                let mut fields = flow_fields("netflow_v5", exporter, pdu);
                set(&mut fields, "sampling_rate", Exp::Is(rate.into()));
                let conv = |k: &str| {
                    let up = deep(pdu, k).and_then(rel_ms)?;
                    Some(from_uptime(export_ms, uptime, up))
                };
                set(
                    &mut fields,
                    "flow_start",
                    conv("cflow.timestart").map_or(Exp::Is(Value::Null), time_value),
                );
                set(
                    &mut fields,
                    "flow_end",
                    conv("cflow.timeend").map_or(Exp::Is(Value::Null), time_value),
                );
                set(&mut fields, "export_time", time_value(export_ms));
                out.push(Expected {
                    location: format!("frame {frame}, {label}"),
                    fields,
                });
            }
        }
        9 | 10 => {
            let (proto, domain_id, export_ms, sysuptime) = if version == 9 {
                (
                    "netflow_v9",
                    num(cflow, "cflow.source_id").unwrap_or(0),
                    num(cflow, "cflow.unix_secs").expect("v9 unix_secs") * 1000,
                    deep(cflow, "cflow.sysuptime").and_then(rel_ms),
                )
            } else {
                (
                    "ipfix",
                    num(cflow, "cflow.od_id").unwrap_or(0),
                    num(cflow, "cflow.exporttime").expect("IPFIX export time") * 1000,
                    None,
                )
            };
            let dom = domains
                .entry((exporter.to_owned(), version, domain_id))
                .or_default();
            for (set_label, set_obj) in children(cflow) {
                let Some(set_id) = num(set_obj, "cflow.flowset_id") else {
                    continue;
                };
                if set_id < 256 {
                    learn_templates(set_id, set_obj, dom);
                    continue;
                }
                // tshark does not decode data whose template it has not seen; neither
                // may the decoder print it before the template arrives.
                let Some(template) = dom.templates.get(&set_id).cloned() else {
                    continue;
                };
                for (label, rec) in children(set_obj) {
                    if !label.starts_with("Flow") {
                        continue;
                    }
                    if template.kind == TemplateKind::Options {
                        learn_options(rec, dom);
                        continue;
                    }
                    let mut fields = flow_fields(proto, exporter, rec);
                    set(
                        &mut fields,
                        "sampling_rate",
                        Exp::Is(sampling_rate(rec, dom).into()),
                    );
                    for (key, rel_key, abs_key, uptime_ie) in [
                        ("flow_start", "cflow.timestart", "cflow.abstimestart", 22),
                        ("flow_end", "cflow.timeend", "cflow.abstimeend", 21),
                    ] {
                        let uptime_field = template.fields.contains(&uptime_ie);
                        let value = match (deep(rec, rel_key), deep(rec, abs_key)) {
                            (Some(rel), _) => {
                                uptime_to_abs(rel_ms(rel), version, export_ms, sysuptime, dom)
                            }
                            (None, Some(abs)) => match abs_ms(abs) {
                                // The tshark quirk (see the module docs).
                                Some(0) if uptime_field => {
                                    uptime_to_abs(Some(0), version, export_ms, sysuptime, dom)
                                }
                                Some(ms) => time_value(ms),
                                None => Exp::Unknown(format!("unparsed time {abs:?}")),
                            },
                            (None, None) => Exp::Is(Value::Null),
                        };
                        set(&mut fields, key, value);
                    }
                    set(&mut fields, "export_time", time_value(export_ms));
                    out.push(Expected {
                        location: format!("frame {frame}, {set_label}, {label}"),
                        fields,
                    });
                }
            }
        }
        other => panic!("frame {frame}: unexpected cflow version {other}"),
    }
}

/// `export - ((uptime_at_export - uptime) mod 2^32)`: `NetFlow` v5/v9 uptimes.
fn from_uptime(export_ms: u64, uptime_at_export: u64, uptime: u64) -> u64 {
    let age = uptime_at_export.wrapping_sub(uptime) & 0xFFFF_FFFF;
    export_ms.saturating_sub(age)
}

fn uptime_to_abs(
    uptime: Option<u64>,
    version: u64,
    export_ms: u64,
    sysuptime: Option<u64>,
    dom: &Domain,
) -> Exp {
    let Some(up) = uptime else {
        return Exp::Unknown("unparsed uptime".into());
    };
    if version == 9 {
        match sysuptime {
            Some(sys) => time_value(from_uptime(export_ms, sys, up)),
            None => Exp::Unknown("v9 header without sysuptime".into()),
        }
    } else {
        match dom.sys_init_ms {
            Some(init) => time_value(init + up),
            None => Exp::Unknown("IPFIX uptime without systemInitTimeMilliseconds".into()),
        }
    }
}

fn learn_templates(set_id: u64, set_obj: &Map<String, Value>, dom: &mut Domain) {
    // v9: 0 templates, 1 options templates; IPFIX: 2 and 3.
    let kind = if set_id == 1 || set_id == 3 {
        TemplateKind::Options
    } else {
        TemplateKind::Data
    };
    for (_, t) in children(set_obj) {
        let Some(id) = num(t, "cflow.template_id") else {
            continue;
        };
        let fields = children(t)
            .into_iter()
            .filter_map(|(_, f)| {
                num(f, "cflow.template_field_type")
                    .or_else(|| num(f, "cflow.template_ipfix_field_type"))
                    .or_else(|| num(f, "cflow.scope_field_type"))
            })
            .map(|ie| ie & 0x7FFF)
            .collect();
        dom.templates.insert(id, Template { kind, fields });
    }
}

fn learn_options(rec: &Map<String, Value>, dom: &mut Domain) {
    if let Some(init) = deep(rec, "cflow.sys_init_time").and_then(abs_ms) {
        dom.sys_init_ms = Some(init);
    }
    let interval = num(rec, "cflow.sampler_random_interval")
        .or_else(|| num(rec, "cflow.sampling_interval"))
        .or_else(|| {
            let n = num(rec, "cflow.sampling_packet_interval")?;
            let space = num(rec, "cflow.sampling_packet_space").unwrap_or(0);
            (n > 0).then(|| (n + space) / n)
        });
    let Some(interval) = interval else { return };
    match num(rec, "cflow.sampler_id") {
        Some(id) => {
            dom.samplers.insert(id, interval);
        }
        None => dom.default_rate = Some(interval),
    }
}

fn sampling_rate(rec: &Map<String, Value>, dom: &Domain) -> u64 {
    let rate = num(rec, "cflow.sampling_interval")
        .or_else(|| num(rec, "cflow.sampler_id").and_then(|id| dom.samplers.get(&id).copied()))
        .or(dom.default_rate)
        .unwrap_or(1);
    rate.max(1)
}

fn set(fields: &mut [(&'static str, Exp)], key: &str, value: Exp) {
    let slot = fields
        .iter_mut()
        .find(|(k, _)| *k == key)
        .expect("known field");
    slot.1 = value;
}

fn opt_num(v: Option<u64>) -> Exp {
    Exp::Is(v.map_or(Value::Null, Value::from))
}

fn opt_str(v: Option<&str>) -> Exp {
    Exp::Is(v.map_or(Value::Null, |s| Value::String(s.to_owned())))
}

/// The fields of a `NetFlow`/IPFIX record that do not depend on header state.
fn flow_fields(proto: &str, exporter: &str, rec: &Map<String, Value>) -> Vec<(&'static str, Exp)> {
    let protocol = num(rec, "cflow.protocol");
    let icmp = match (
        num(rec, "cflow.icmp_type_code_ipv4"),
        num(rec, "cflow.icmp_ipv6_type"),
        num(rec, "cflow.icmp_ipv6_code"),
    ) {
        (Some(tc), _, _) => Some(tc),
        (None, Some(t), c) => Some(t * 256 + c.unwrap_or(0)),
        _ => None,
    };
    let dst_port = match protocol {
        Some(1 | 58) if icmp.is_some() => icmp,
        _ => num(rec, "cflow.dstport"),
    };
    let mut fields: Vec<(&'static str, Exp)> =
        FIELDS.iter().map(|k| (*k, Exp::Is(Value::Null))).collect();
    set(&mut fields, "proto", Exp::Is(proto.into()));
    set(&mut fields, "exporter_ip", Exp::Is(exporter.into()));
    set(
        &mut fields,
        "src_ip",
        opt_str(deep(rec, "cflow.srcaddr").or_else(|| deep(rec, "cflow.srcaddrv6"))),
    );
    set(
        &mut fields,
        "dst_ip",
        opt_str(deep(rec, "cflow.dstaddr").or_else(|| deep(rec, "cflow.dstaddrv6"))),
    );
    set(&mut fields, "src_port", opt_num(num(rec, "cflow.srcport")));
    set(&mut fields, "dst_port", opt_num(dst_port));
    set(&mut fields, "protocol", opt_num(protocol));
    set(
        &mut fields,
        "bytes",
        opt_num(num(rec, "cflow.octets").or_else(|| num(rec, "cflow.octets64"))),
    );
    set(
        &mut fields,
        "packets",
        opt_num(num(rec, "cflow.packets").or_else(|| num(rec, "cflow.packets64"))),
    );
    set(
        &mut fields,
        "tcp_flags",
        opt_num(num(rec, "cflow.tcpflags")),
    );
    set(
        &mut fields,
        "input_interface",
        opt_num(num(rec, "cflow.inputint")),
    );
    set(
        &mut fields,
        "output_interface",
        opt_num(num(rec, "cflow.outputint")),
    );
    set(&mut fields, "src_as", opt_num(num(rec, "cflow.srcas")));
    set(&mut fields, "dst_as", opt_num(num(rec, "cflow.dstas")));
    fields
}

/// The sFlow v5 `interface` encoding of a flow sample (compact or expanded).
fn sflow_interface(sample: &Map<String, Value>, which: &str) -> Exp {
    let (format, value) = match (
        num(
            sample,
            &format!("sflow.flow_sample.{which}_interface_format"),
        ),
        num(
            sample,
            &format!("sflow.flow_sample.{which}_interface_value"),
        ),
        num(sample, &format!("sflow.flow_sample.{which}_interface")),
    ) {
        (Some(f), Some(v), _) => (f, v),
        (None, None, Some(raw)) => (raw >> 30, raw & 0x3FFF_FFFF),
        (_, Some(v), _) => (0, v),
        _ => return Exp::Unknown(format!("no {which} interface in the sample")),
    };
    if format != 0 || value == 0x3FFF_FFFF || value == 0xFFFF_FFFF {
        Exp::Is(Value::Null)
    } else {
        Exp::Is(value.into())
    }
}

fn sflow_records(frame: usize, frame_ms: u64, sflow: &Map<String, Value>, out: &mut Vec<Expected>) {
    let agent = text(sflow, "sflow_245.agent").or_else(|| text(sflow, "sflow_245.agentv6"));
    for (label, sample) in children(sflow) {
        let format = num(sample, "sflow_245.sampletype");
        if num(sample, "sflow.enterprise") != Some(0) || !matches!(format, Some(1 | 3)) {
            continue;
        }
        let mut fields: Vec<(&'static str, Exp)> =
            FIELDS.iter().map(|k| (*k, Exp::Is(Value::Null))).collect();
        set(&mut fields, "proto", Exp::Is("sflow_v5".into()));
        set(&mut fields, "exporter_ip", opt_str(agent));
        set(&mut fields, "packets", Exp::Is(1.into()));
        set(
            &mut fields,
            "sampling_rate",
            opt_num(num(sample, "sflow.flow_sample.sampling_rate")),
        );
        set(
            &mut fields,
            "input_interface",
            sflow_interface(sample, "input"),
        );
        set(
            &mut fields,
            "output_interface",
            sflow_interface(sample, "output"),
        );
        set(&mut fields, "export_time", time_value(frame_ms));
        let records = children(sample);
        let header = records
            .iter()
            .find(|(_, r)| num(r, "sflow_245.flow_record_format") == Some(1))
            .map(|(_, r)| *r);
        match header {
            Some(h) => sampled_header(h, &mut fields),
            None => {
                for key in [
                    "src_ip",
                    "dst_ip",
                    "src_port",
                    "dst_port",
                    "protocol",
                    "bytes",
                    "tcp_flags",
                ] {
                    set(
                        &mut fields,
                        key,
                        Exp::Unknown("sample has no raw packet header".into()),
                    );
                }
            }
        }
        if let Some((_, gw)) = records
            .iter()
            .find(|(_, r)| num(r, "sflow_245.flow_record_format") == Some(1003))
        {
            set(&mut fields, "src_as", opt_num(num(gw, "sflow_245.srcAS")));
            let path = dst_as_path(gw);
            set(&mut fields, "dst_as", opt_num(path.last().copied()));
        }
        out.push(Expected {
            location: format!("frame {frame}, {label}"),
            fields,
        });
    }
}

/// All AS numbers of the destination AS path of an extended gateway record, in order.
fn dst_as_path(gw: &Map<String, Value>) -> Vec<u64> {
    fn walk(obj: &Map<String, Value>, out: &mut Vec<u64>) {
        for (k, v) in obj {
            if k == "sflow_245.dstAS" {
                let vals: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                out.extend(
                    vals.into_iter()
                        .filter_map(Value::as_str)
                        .filter_map(number),
                );
            } else if let Value::Object(o) = v {
                walk(o, out);
            } else if let Value::Array(a) = v {
                for o in a.iter().filter_map(Value::as_object) {
                    walk(o, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(gw, &mut out);
    out
}

fn sampled_header(h: &Map<String, Value>, fields: &mut [(&'static str, Exp)]) {
    set(
        fields,
        "bytes",
        opt_num(num(h, "sflow_245.header.frame_length")),
    );
    let Some(tree) = object(h, "sflow_245.header_tree") else {
        for key in [
            "src_ip",
            "dst_ip",
            "src_port",
            "dst_port",
            "protocol",
            "tcp_flags",
        ] {
            set(
                fields,
                key,
                Exp::Unknown("tshark did not dissect the sampled header".into()),
            );
        }
        return;
    };
    let (src, dst, protocol) = if let Some(ip) = object(tree, "ip") {
        (text(ip, "ip.src"), text(ip, "ip.dst"), num(ip, "ip.proto"))
    } else if let Some(ip) = object(tree, "ipv6") {
        (
            text(ip, "ipv6.src"),
            text(ip, "ipv6.dst"),
            num(ip, "ipv6.nxt"),
        )
    } else {
        (None, None, None)
    };
    set(fields, "src_ip", opt_str(src));
    set(fields, "dst_ip", opt_str(dst));
    set(fields, "protocol", opt_num(protocol));
    if let Some(tcp) = object(tree, "tcp") {
        set(fields, "src_port", opt_num(num(tcp, "tcp.srcport")));
        set(fields, "dst_port", opt_num(num(tcp, "tcp.dstport")));
        set(fields, "tcp_flags", opt_num(num(tcp, "tcp.flags")));
    } else if let Some(udp) = object(tree, "udp") {
        set(fields, "src_port", opt_num(num(udp, "udp.srcport")));
        set(fields, "dst_port", opt_num(num(udp, "udp.dstport")));
    } else if let Some((l4, prefix)) = object(tree, "icmp")
        .map(|o| (o, "icmp"))
        .or_else(|| object(tree, "icmpv6").map(|o| (o, "icmpv6")))
    {
        let t = num(l4, &format!("{prefix}.type"));
        let c = num(l4, &format!("{prefix}.code"));
        set(fields, "src_port", Exp::Is(0.into()));
        set(
            fields,
            "dst_port",
            opt_num(t.map(|t| t * 256 + c.unwrap_or(0))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tshark_times() {
        assert_eq!(rel_ms("12.999000000"), Some(12_999));
        assert_eq!(rel_ms("4294938.459000000"), Some(4_294_938_459));
        assert_eq!(rel_ms("0"), Some(0));
        assert_eq!(epoch_ms("1795753363.224567000"), Some(1_795_753_363_224));
        assert_eq!(
            abs_ms("Nov 27, 2026 04:21:38.418000000 UTC"),
            Some(1_795_753_298_418)
        );
        assert_eq!(abs_ms("Jan  1, 1970 00:00:00.000000000 UTC"), Some(0));
        assert_eq!(number("0x1e"), Some(30));
        assert_eq!(
            from_uptime(1_000_000, 5, u64::from(u32::MAX) - 9),
            1_000_000 - 15
        );
    }
}
