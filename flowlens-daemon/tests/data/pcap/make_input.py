#!/usr/bin/env python3
"""Write input.pcap: synthetic but well-formed Ethernet/IPv4/IPv6 traffic for the
flow exporters (softflowd, pmacctd) to turn into NetFlow/IPFIX/sFlow.

Deterministic except for the base timestamp (argv[2], Unix seconds, default: now),
which exporters copy into flow start/end times. Addresses are documentation ranges
(RFC 5737 / RFC 3849); the file is only ever read offline, nothing is sent to them.

Contents: 8 IPv4 + 4 IPv6 TCP connections (handshake, data both ways, FIN or RST),
IPv4 UDP exchanges (DNS, NTP, syslog, high ports), IPv6 DNS, ICMP and ICMPv6 echo.
Usage: make_input.py OUT.pcap [BASE_UNIX_SECONDS]
"""
import struct
import sys
import time

OUT = sys.argv[1]
BASE = float(sys.argv[2]) if len(sys.argv) > 2 else float(int(time.time()) - 30)

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")

def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF

def ip4(s: str) -> bytes:
    return bytes(int(x) for x in s.split("."))

def ip6(s: str) -> bytes:
    import ipaddress
    return ipaddress.IPv6Address(s).packed

def is6(a: str) -> bool:
    return ":" in a

def l3(src, dst, proto, l4, ttl=64, tos=0, ident=[0x1000]):
    if is6(src):
        s, d = ip6(src), ip6(dst)
        pseudo = s + d + struct.pack("!IxxxB", len(l4), proto)
        hdr = struct.pack("!IHBB", (6 << 28) | (tos << 20), len(l4), proto, ttl) + s + d
        return 0x86DD, hdr, pseudo
    s, d = ip4(src), ip4(dst)
    pseudo = s + d + struct.pack("!xBH", proto, len(l4))
    ident[0] = (ident[0] + 7) & 0xFFFF
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(l4), ident[0], 0x4000, ttl, proto, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return 0x0800, hdr, pseudo

def frame(src, dst, proto, l4_nock, ck_off, tos=0):
    """l4_nock: L4 bytes with a zero checksum at ck_off; fills it in."""
    ethertype, hdr, pseudo = l3(src, dst, proto, l4_nock, tos=tos)
    c = csum(pseudo + l4_nock)
    if proto == 17 and c == 0:
        c = 0xFFFF
    l4 = l4_nock[:ck_off] + struct.pack("!H", c) + l4_nock[ck_off + 2:]
    return MAC_B + MAC_A + struct.pack("!H", ethertype) + hdr + l4

packets = []  # (time, bytes)

def emit(t, pkt):
    packets.append((BASE + t, pkt))

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

def tcp(src, sport, dst, dport, seq, ack, flags, payload=b"", tos=0):
    off = 5 << 4
    l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off, flags, 65535, 0, 0) + payload
    return frame(src, dst, 6, l4, 16, tos)

def udp(src, sport, dst, dport, payload, tos=0):
    l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return frame(src, dst, 17, l4, 6, tos)

def icmp_echo(src, dst, typ, ident, seq, payload):
    if is6(src):
        l4 = struct.pack("!BBHHH", typ, 0, 0, ident, seq) + payload
        return frame(src, dst, 58, l4, 2)
    l4 = struct.pack("!BBHHH", typ, 0, 0, ident, seq) + payload
    l4 = l4[:2] + struct.pack("!H", csum(l4)) + l4[4:]
    return MAC_B + MAC_A + struct.pack("!H", 0x0800) + l3(src, dst, 1, l4)[1] + l4

def tcp_conn(t, c, cp, s, sp, req, resp_sizes, close="fin", tos=0, gap=0.0137):
    """A client/server exchange; returns nothing, emits packets from time t."""
    cs, ss = 1000 + cp * 3, 50000 + sp * 11
    emit(t, tcp(c, cp, s, sp, cs, 0, SYN, tos=tos)); t += gap
    emit(t, tcp(s, sp, c, cp, ss, cs + 1, SYN | ACK, tos=tos)); t += gap
    cs += 1; ss += 1
    emit(t, tcp(c, cp, s, sp, cs, ss, ACK, tos=tos)); t += gap
    emit(t, tcp(c, cp, s, sp, cs, ss, PSH | ACK, req, tos=tos)); t += gap
    cs += len(req)
    for n in resp_sizes:
        body = bytes((i * 7 + n) & 0xFF for i in range(n))
        emit(t, tcp(s, sp, c, cp, ss, cs, ACK | (PSH if n < 1400 else 0), body, tos=tos)); t += gap
        ss += n
        emit(t, tcp(c, cp, s, sp, cs, ss, ACK, tos=tos)); t += gap / 3
    if close == "fin":
        emit(t, tcp(c, cp, s, sp, cs, ss, FIN | ACK, tos=tos)); t += gap
        emit(t, tcp(s, sp, c, cp, ss, cs + 1, FIN | ACK, tos=tos)); t += gap
        emit(t, tcp(c, cp, s, sp, cs + 1, ss + 1, ACK, tos=tos))
    else:
        emit(t, tcp(c, cp, s, sp, cs, ss, RST | ACK, tos=tos))

C4, S4, S4b = "192.0.2.10", "198.51.100.20", "203.0.113.5"
C6, S6, S6b = "2001:db8::10", "2001:db8:1::20", "2001:db8:2::53"

# IPv4 TCP
tcp_conn(0.101, C4, 40001, S4, 80, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [512, 1448, 300])
tcp_conn(0.523, C4, 40002, S4, 443, b"\x16\x03\x01" + b"h" * 200, [1448, 1448, 90])
tcp_conn(1.207, C4, 40003, S4b, 22, b"SSH-2.0-OpenSSH_9.2\r\n", [40, 600], tos=0x10)
tcp_conn(1.999, C4, 40004, S4b, 25, b"EHLO example\r\n", [250])
tcp_conn(2.418, C4, 40005, S4, 8080, b"POST /x HTTP/1.1\r\n\r\n" + b"p" * 700, [120], close="rst")
tcp_conn(3.333, "192.0.2.11", 51515, S4, 3306, b"\x0a" * 60, [1000, 77])
tcp_conn(4.044, "192.0.2.12", 33333, S4b, 5432, b"Q" * 33, [64, 64, 64])
tcp_conn(4.777, C4, 40006, S4, 80, b"GET /big HTTP/1.1\r\n\r\n", [1448, 1448, 1448, 200], close="rst")
# IPv6 TCP
tcp_conn(5.101, C6, 41001, S6, 80, b"GET /v6 HTTP/1.1\r\n\r\n", [700, 1200])
tcp_conn(5.612, C6, 41002, S6, 443, b"\x16\x03\x03" + b"x" * 150, [1400, 33])
tcp_conn(6.250, "2001:db8::11", 41003, S6b, 22, b"SSH-2.0-x\r\n", [80], close="rst", tos=0x20)
tcp_conn(6.876, C6, 41004, S6b, 8443, b"z" * 10, [10, 20, 30])
# IPv4 UDP
for i, (sp, dp, q, r) in enumerate([(53001, 53, 40, 120), (53002, 53, 44, 300), (123, 123, 48, 48),
                                     (49152, 514, 150, 0), (60000, 5060, 400, 350), (61000, 6000, 90, 0),
                                     (33434, 33434, 32, 0), (50505, 161, 60, 200)]):
    t = 7.3 + i * 0.271
    srv = S4 if i % 2 else S4b
    emit(t, udp(C4, sp, srv, dp, bytes([i]) * q))
    if r:
        emit(t + 0.0042, udp(srv, dp, C4, sp, bytes([i + 1]) * r))
# a UDP flow with several packets each way
for k in range(6):
    emit(9.5 + k * 0.05, udp("192.0.2.13", 40404, S4, 9999, b"s" * (100 + 10 * k)))
    emit(9.52 + k * 0.05, udp(S4, 9999, "192.0.2.13", 40404, b"r" * (50 + k)))
# IPv6 UDP
for i, (sp, dp, q, r) in enumerate([(54001, 53, 45, 160), (54002, 53, 50, 0), (547, 546, 80, 90), (55555, 443, 1200, 1100)]):
    t = 10.1 + i * 0.333
    emit(t, udp(C6, sp, S6b, dp, bytes([i]) * q))
    if r:
        emit(t + 0.0031, udp(S6b, dp, C6, sp, bytes([i + 2]) * r))
# ICMP echo v4 and v6
for k in range(4):
    emit(11.5 + k * 0.25, icmp_echo(C4, S4, 8, 0x1234, k, b"ping" * 14))
    emit(11.5007 + k * 0.25, icmp_echo(S4, C4, 0, 0x1234, k, b"ping" * 14))
for k in range(3):
    emit(12.7 + k * 0.2, icmp_echo(C6, S6, 128, 0x4321, k, b"p6" * 28))
    emit(12.7009 + k * 0.2, icmp_echo(S6, C6, 129, 0x4321, k, b"p6" * 28))

packets.sort(key=lambda p: p[0])
with open(OUT, "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for t, pkt in packets:
        sec = int(t)
        usec = int(round((t - sec) * 1e6))
        if usec >= 1000000:
            sec, usec = sec + 1, usec - 1000000
        f.write(struct.pack("<IIII", sec, usec, len(pkt), len(pkt)))
        f.write(pkt)
print(f"{OUT}: {len(packets)} packets", file=sys.stderr)
