#!/usr/bin/env bash
# Regenerates every capture under flowlens-daemon/tests/data/pcap/ from real exporters.
#
#   sudo bash flowlens-daemon/tests/data/pcap/generate.sh
#
# What it does
#   1. make_input.py writes input.pcap: ~180 Ethernet frames, 8 IPv4 + 4 IPv6 TCP
#      connections, IPv4/IPv6 UDP, ICMP and ICMPv6 echo (documentation addresses only;
#      the file is only read offline). Its timestamps start INPUT_BASE (Unix seconds,
#      default: now - 60 s), so flow times stay close to the exporters' export times.
#   2. Debian's softflowd reads input.pcap and exports NetFlow v5, v9 and IPFIX.
#   3. Debian's pmacctd reads input.pcap with the sfprobe and nfprobe plugins and
#      exports sFlow v5, NetFlow v9 and IPFIX, once unsampled and once sampled.
#   4. ipfix/pmacct.pcap is split into template-only.pcap (its first datagram, which
#      carries only templates) and data-only.pcap (the rest) for template state across
#      files.
#   The export datagrams go to 127.0.0.1 inside a private network namespace (so no
#   other process's traffic on the host loopback can end up in a capture) and are
#   captured there with tcpdump. Standard ports, so tshark needs no decode-as:
#   NetFlow 2055, IPFIX 4739, sFlow 6343.
#
# Requirements: root (network namespace), bash, python3, softflowd, pmacct, tcpdump,
# tshark/editcap (Debian: apt-get install softflowd pmacct tcpdump tshark).
# Made with (Debian 12): softflowd 1.1.0, pmacctd 1.7.7-git, tcpdump 4.99.3,
# TShark 4.0.17. Re-running replaces every file (fresh timestamps, and pmacct's
# sampling is random, so record contents change); afterwards regenerate the goldens:
#   UPDATE_GOLDEN=1 cargo test -p flowlens-daemon --test golden
#
# Exact exporter commands (PCAP is input.pcap; -p/-c only move softflowd's pid file
# and control socket away from /var/run; -a makes softflowd take its clock from the
# pcap, so export header times and flow times are consistent):
#   softflowd -d -a -r PCAP -n 127.0.0.1:2055 -v 5  -p T/sf.pid -c /run/flg.c
#   softflowd -d -a -r PCAP -n 127.0.0.1:2055 -v 9  -p T/sf.pid -c /run/flg.c
#   softflowd -d -a -r PCAP -n 127.0.0.1:4739 -v 10 -p T/sf.pid -c /run/flg.c
# softflowd 1.1.0 quirk: with a control socket path of 13 characters or more, -r never
# exits after the end of the file (it blocks reading its control socket); hence the
# short /run/flg.c, and a timeout around it.
#   pmacctd -f T/pmacct-RATE.conf     (RATE 1 and 4; the config is pmacct_conf below:
#     pcap_savefile: PCAP, plugins sfprobe[sf] -> 127.0.0.1:6343 (agent 192.0.2.1,
#     sub-agent 7, ifIndex 5 in), nfprobe[nf9] v9 -> 127.0.0.1:2055 (source id 9,
#     ifIndex 3 in), nfprobe[nf10] IPFIX -> 127.0.0.1:4739 (domain 10, ifIndex 4 out),
#     AS numbers from a networks_file; with RATE 4 all three sample 1 in 4, randomly)
# tcpdump runs with --immediate-mode: without it packets still in libpcap's buffer when
# tcpdump is stopped are lost ("N packets received by filter", 0 captured).
# KEEP_TMP=1 keeps the temp dir (exporter logs, configs) for debugging.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

if [[ $(id -u) -ne 0 ]]; then
    echo "generate.sh: must run as root (it creates a network namespace)" >&2
    exit 1
fi
for tool in python3 softflowd pmacctd tcpdump tshark editcap ip; do
    command -v "$tool" >/dev/null || { echo "generate.sh: $tool not found" >&2; exit 1; }
done

NS="flowlens-gen-$$"
declare -A TCPDUMP_PID=()
TMP="$(mktemp -d)"
cleanup() {
    local pid
    for pid in "${TCPDUMP_PID[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    [[ -n "${KEEP_TMP:-}" ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
inns() { ip netns exec "$NS" "$@"; }

INPUT_BASE="${INPUT_BASE:-$(( $(date +%s) - 60 ))}"
python3 make_input.py input.pcap "$INPUT_BASE"
INPUT="$HERE/input.pcap"

# start_capture NAME FILTER: tcpdump on the namespace's lo into $TMP/NAME.pcap.
start_capture() {
    local name="$1" filter="$2"
    # Not through the inns function: $! must be tcpdump itself (ip netns exec execs it),
    # not a subshell, so the signal in stop_capture reaches it.
    ip netns exec "$NS" tcpdump -i lo -U --immediate-mode -Z root -s 0 -w "$TMP/$name.pcap" "$filter" \
        2>"$TMP/$name.tcpdump.log" &
    TCPDUMP_PID[$name]=$!
    for _ in $(seq 50); do
        grep -q "listening on" "$TMP/$name.tcpdump.log" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "generate.sh: tcpdump for $name did not start" >&2
    cat "$TMP/$name.tcpdump.log" >&2
    exit 1
}
# stop_capture NAME DEST: stop tcpdump (after the kernel delivered everything) and
# move the capture to DEST.
stop_capture() {
    local name="$1" dest="$2"
    sleep 0.5
    kill -TERM "${TCPDUMP_PID[$name]}"
    wait "${TCPDUMP_PID[$name]}" || true
    mkdir -p "$(dirname "$dest")"
    cp "$TMP/$name.pcap" "$dest"
    local n
    n=$(tshark -r "$dest" 2>/dev/null | wc -l)
    [[ $n -gt 0 ]] || { echo "generate.sh: $dest is empty" >&2; exit 1; }
    echo "$dest: $n datagrams, $(stat -c %s "$dest") bytes"
}

# --- softflowd -------------------------------------------------------------------
softflowd_case() {
    local version="$1" port="$2" dest="$3"
    start_capture sf "udp port $port"
    rm -f /run/flg.c
    inns timeout 60 softflowd -d -a -r "$INPUT" -n "127.0.0.1:$port" -v "$version" \
        -p "$TMP/sf.pid" -c /run/flg.c >"$TMP/softflowd-v$version.log" 2>&1
    stop_capture sf "$dest"
}
softflowd_case 5 2055 netflow_v5/softflowd.pcap
softflowd_case 9 2055 netflow_v9/softflowd.pcap
softflowd_case 10 4739 ipfix/softflowd.pcap

# --- pmacctd ---------------------------------------------------------------------
# AS numbers come from a networks_file, so src_as/dst_as are non-zero in the exports
# (two of them above 65535, to exercise 4-byte AS fields); fixed ifIndexes/directions
# give non-zero interface fields. (pmacct 1.7.7 gave every IPv6 address the AS of the
# first IPv6 line when there were several /48s, hence a single /32.)
cat >"$TMP/networks.txt" <<'NETS'
64496,192.0.2.0/24
64497,198.51.100.0/24
4200000002,203.0.113.0/24
4200000001,2001:db8::/32
NETS

# pmacct_conf RATE: a pmacctd config with sfprobe, nfprobe v9 and nfprobe IPFIX.
# RATE 1 means unsampled (no sampling_rate key for nfprobe).
pmacct_conf() {
    local rate="$1" nf_sampling=""
    if [[ $rate -gt 1 ]]; then
        nf_sampling="sampling_rate[nf9]: $rate
sampling_rate[nf10]: $rate"
    fi
    cat <<CONF
daemonize: false
pcap_savefile: $INPUT
networks_file: $TMP/networks.txt
pmacctd_as: file
plugins: sfprobe[sf], nfprobe[nf9], nfprobe[nf10]
sfprobe_receiver[sf]: 127.0.0.1:6343
sfprobe_agentip[sf]: 192.0.2.1
sfprobe_agentsubid[sf]: 7
sfprobe_ifindex[sf]: 5
sfprobe_direction[sf]: in
sampling_rate[sf]: $rate
aggregate[sf]: src_host, dst_host, src_port, dst_port, proto, tos, src_as, dst_as
nfprobe_receiver[nf9]: 127.0.0.1:2055
nfprobe_version[nf9]: 9
nfprobe_ifindex[nf9]: 3
nfprobe_direction[nf9]: in
nfprobe_engine[nf9]: 9
aggregate[nf9]: src_host, dst_host, src_port, dst_port, proto, tos, tcpflags, src_as, dst_as
nfprobe_receiver[nf10]: 127.0.0.1:4739
nfprobe_version[nf10]: 10
nfprobe_ifindex[nf10]: 4
nfprobe_direction[nf10]: out
nfprobe_engine[nf10]: 10
aggregate[nf10]: src_host, dst_host, src_port, dst_port, proto, tos, tcpflags, src_as, dst_as
$nf_sampling
CONF
}
pmacct_case() {
    local rate="$1" suffix="$2"
    pmacct_conf "$rate" >"$TMP/pmacct-$rate.conf"
    start_capture sflow "udp port 6343"
    start_capture nf9 "udp port 2055"
    start_capture ipfix "udp port 4739"
    # pmacctd sleeps 2 s, replays the file once, flushes every plugin's cache on EOF
    # and exits; timeout only guards against a hang.
    inns timeout 60 pmacctd -f "$TMP/pmacct-$rate.conf" >"$TMP/pmacct-$rate.log" 2>&1
    stop_capture sflow "sflow_v5/pmacct$suffix.pcap"
    stop_capture nf9 "netflow_v9/pmacct$suffix.pcap"
    stop_capture ipfix "ipfix/pmacct$suffix.pcap"
}
pmacct_case 1 ""
pmacct_case 4 "-sampled"

# --- template state across files -------------------------------------------------
# pmacct's first IPFIX datagram carries only the templates.
first_sets=$(tshark -r ipfix/pmacct.pcap -c 1 2>/dev/null)
if ! grep -q "Data-Template" <<<"$first_sets" || grep -q "\[Data:" <<<"$first_sets"; then
    echo "generate.sh: first ipfix/pmacct.pcap datagram is not template-only: $first_sets" >&2
    exit 1
fi
editcap -r ipfix/pmacct.pcap ipfix/template-only.pcap 1
editcap ipfix/pmacct.pcap ipfix/data-only.pcap 1
echo "ipfix/template-only.pcap + ipfix/data-only.pcap split from ipfix/pmacct.pcap"
