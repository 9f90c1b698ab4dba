"""Hand-driven HTTP/2 over TLS for tests/attack/hostile.py: frames built with hyperframe
or byte by byte, a literal-only HPACK encoder (what it is given goes on the wire as is:
uppercase names, duplicated or misplaced pseudo-headers), and `Conn`, one connection
pumped in a single thread (sending what is queued, reading and parsing what comes back,
answering SETTINGS and PING, granting window unless told not to). Every counter goes to
`STATS`, which hostile.py prints as its RESULT.
"""

import collections
import select
import socket
import ssl
import struct
import threading
import time

import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CANCEL = 0x8  # RST_STREAM error code
TUNNEL_PROTOCOL = "virtgate-stream"
# What the gateway's HTTP/2 server may send in one frame (virtgate_proto::tuning::MAX_FRAME
# is larger; 16 KiB is the protocol's floor and always allowed).
FRAME = 16384


class Stats:
    """Counters of one attack, printed as the RESULT line (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.c = collections.Counter()

    def add(self, key, n=1):
        with self.lock:
            self.c[key] += n


STATS = Stats()


def hpack_int(value, prefix_bits, first):
    """RFC 7541 5.1 integer with an N-bit prefix; `first` holds the pattern bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_block(headers):
    """Literal header fields without indexing, new name, no Huffman: exactly the bytes
    given (uppercase names, duplicates and pseudo-headers anywhere stay as they are)."""
    out = bytearray()
    for name, value in headers:
        name = name.encode() if isinstance(name, str) else name
        value = value.encode() if isinstance(value, str) else value
        out += b"\x00" + hpack_int(len(name), 7, 0) + name + hpack_int(len(value), 7, 0) + value
    return bytes(out)


def table_size_update(size):
    """HPACK dynamic table size update (RFC 7541 6.3)."""
    return hpack_int(size, 5, 0x20)


def settings(values, ack=False):
    f = SettingsFrame(0, settings=values)
    if ack:
        f.flags.add("ACK")
    return f.serialize()


def raw_frame(ftype, flags, stream_id, payload):
    """A frame hyperframe would not build (e.g. one SETTINGS id many times)."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream_id) + payload


def headers_frames(stream_id, block, end_stream=True):
    """HEADERS (+ CONTINUATION) frames carrying `block`, split at FRAME bytes."""
    chunks = [block[i:i + FRAME] for i in range(0, len(block), FRAME)] or [b""]
    first = HeadersFrame(stream_id, data=chunks[0])
    if end_stream:
        first.flags.add("END_STREAM")
    out = []
    for i, c in enumerate(chunks):
        f = first if i == 0 else ContinuationFrame(stream_id, data=c)
        if i == len(chunks) - 1:
            f.flags.add("END_HEADERS")
        out.append(f.serialize())
    return b"".join(out)


def request(a, path, method="GET", extra=()):
    h = [(":method", method), (":scheme", "https"), (":authority", f"{a.host}:{a.port}"),
         (":path", path)]
    if method == "CONNECT":
        h.append((":protocol", TUNNEL_PROTOCOL))
    return h + list(extra)


def tcp_connect(a, source=None, timeout=10):
    src = source or a.source
    return socket.create_connection((a.host, a.port), timeout=timeout,
                                    source_address=(src, 0) if src else None)


CONTEXTS = {}


def tls_context(a, cert=True):
    """The client's TLS settings, made once per kind (decrypting the key is slow)."""
    if cert in CONTEXTS:
        return CONTEXTS[cert]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(a.ca)
    ctx.set_alpn_protocols(["h2"])
    if cert and a.cert:
        password = None
        if a.key_password_file:
            with open(a.key_password_file) as f:
                password = f.readline().rstrip("\n")
        ctx.load_cert_chain(a.cert, a.key, password=password)
    CONTEXTS[cert] = ctx
    return ctx


class Conn:
    """One TLS + HTTP/2 connection driven by hand in a single thread: `pump` sends what is
    queued while reading (and parsing) whatever the gateway sends, unless `read` is off."""

    def __init__(self, a, cert=True, local=None, read=True, window_updates=True):
        self.a = a
        raw = tcp_connect(a)
        self.sock = tls_context(a, cert).wrap_socket(raw, server_hostname=a.host)
        if self.sock.selected_alpn_protocol() != "h2":
            raise RuntimeError("the gateway did not select h2")
        self.sock.setblocking(False)
        self.read, self.window_updates = read, window_updates
        self.out, self.inbuf = bytearray(), bytearray()
        self.closed, self.goaway = False, None
        self.statuses = collections.Counter()
        self.resets = collections.Counter()
        self.responses = {}
        self.reset_ids = set()
        self.decoder = hpack.Decoder()
        STATS.add("connections")
        self.queue(PREFACE + settings(local or {}))

    def queue(self, data):
        self.out += data

    def pump(self, wait=0.0, until=None, done=None):
        """Flush the queue (reading meanwhile), then keep reading for `wait` seconds or
        until `done()`; gives up at `until` (the attack's end) even if the gateway stopped
        reading."""
        end = time.monotonic() + wait
        while not self.closed:
            now = time.monotonic()
            if (until and now >= until) or (not self.out and (now >= end or (done and done()))):
                return
            rd = [self.sock] if self.read else []
            wr = [self.sock] if self.out else []
            timeout = max(0.0, min(end - now, 0.2)) if not self.out else 0.2
            if self.read and self.sock.pending():
                r, w = [self.sock], []
            else:
                r, w, _ = select.select(rd, wr, [], timeout)
            try:
                if r:
                    data = self.sock.recv(1 << 16)
                    if not data:
                        self.closed = True
                        return
                    self.inbuf += data
                    self.parse()
                if w and self.out:
                    n = self.sock.send(self.out[:1 << 16])
                    STATS.add("bytes_sent", n)
                    del self.out[:n]
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            except (OSError, ssl.SSLError):
                self.closed = True
                return

    def parse(self):
        while len(self.inbuf) >= 9:
            f, length = Frame.parse_frame_header(memoryview(self.inbuf[:9]))
            if len(self.inbuf) < 9 + length:
                return
            f.parse_body(memoryview(bytes(self.inbuf[9:9 + length])))
            del self.inbuf[:9 + length]
            self.on_frame(f)

    def on_frame(self, f):
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            self.queue(settings({}, ack=True))
        elif isinstance(f, PingFrame) and "ACK" not in f.flags:
            self.queue(PingFrame(0, opaque_data=f.opaque_data, flags=["ACK"]).serialize())
        elif isinstance(f, GoAwayFrame):
            self.goaway = f.error_code
            STATS.add(f"goaway_{f.error_code}")
        elif isinstance(f, RstStreamFrame):
            self.resets[f.error_code] += 1
            self.reset_ids.add(f.stream_id)
            STATS.add(f"rst_stream_{f.error_code}")
        elif isinstance(f, HeadersFrame):
            status = self.status(f)
            if status:
                self.statuses[status] += 1
                self.responses[f.stream_id] = status
                STATS.add(f"status_{status}")
        elif isinstance(f, DataFrame) and self.window_updates and f.flow_controlled_length:
            n = f.flow_controlled_length
            self.queue(WindowUpdateFrame(0, window_increment=n).serialize()
                       + WindowUpdateFrame(f.stream_id, window_increment=n).serialize())

    def status(self, f):
        """The :status of a response (HPACK state is kept even for blocks we ignore)."""
        try:
            fields = self.decoder.decode(bytes(f.data))
        except hpack.HPACKError:
            return None
        return next((int(v) for k, v in fields if k == ":status"), None)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def open_conn(a, **kw):
    """A connection, or None (counted) when the gateway refuses or drops the handshake."""
    try:
        return Conn(a, **kw)
    except (OSError, ssl.SSLError, RuntimeError) as e:
        STATS.add("connect_failed")
        STATS.add(f"connect_failed_{type(e).__name__}")
        return None
