"""Drives libvirt's own Python binding the way virt-manager and virt-viewer do, through a
`virtgate libvirt` URI. One operation per run; prints one JSON object per result line.

usage: drive.py URI OP NAME [ARGS]
  fd NAME IDX PROTO      openGraphicsFD(IDX, 0), handshake, then list domains on the same connection
  open NAME IDX PROTO    openGraphics(IDX, our socketpair end, 0), handshake, list
  loop NAME N PROTO      N x (openGraphicsFD, handshake, close), then list
  hold NAME IDX PROTO OTHER
                         openGraphicsFD, handshake, print a "ready" line, wait for a line on
                         stdin, then wait for the display stream to end; then
                         openGraphicsFD on OTHER works and the connection still lists
  refuse NAME IDX        openGraphicsFD must fail: prints the libvirt error, then list
  files NAME             createWithFiles([/dev/null]) (another call that passes descriptors)
                         must fail cleanly: prints the libvirt error, then list
PROTO is vnc (reads "RFB 003.00x") or spice (sends a SpiceLinkHeader, reads "REDQ").
"""
import json
import socket
import struct
import sys

import libvirt

# errors are reported in the JSON, not printed by libvirt
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def handshake(sock, proto):
    sock.settimeout(20)
    if proto == "vnc":
        data = b""
        while len(data) < 12:
            chunk = sock.recv(12 - len(data))
            if not chunk:
                break
            data += chunk
        return data.decode("latin-1")
    # SpiceLinkMess: connection_id, channel_type (1 = main), channel_id, no common caps,
    # no channel caps, caps_offset 18
    mess = struct.pack("<IBBIII", 0, 1, 0, 0, 0, 18)
    sock.sendall(b"REDQ" + struct.pack("<III", 2, 2, len(mess)) + mess)
    return sock.recv(4).decode("latin-1")


def names(conn):
    return sorted(d.name() for d in conn.listAllDomains())


def main():
    uri, op, name = sys.argv[1], sys.argv[2], sys.argv[3]
    conn = libvirt.open(uri)
    dom = conn.lookupByName(name)
    out = {}
    if op == "fd":
        idx, proto = int(sys.argv[4]), sys.argv[5]
        fd = dom.openGraphicsFD(idx, 0)
        with socket.socket(fileno=fd) as s:
            out["banner"] = handshake(s, proto)
    elif op == "open":
        idx, proto = int(sys.argv[4]), sys.argv[5]
        mine, theirs = socket.socketpair()
        dom.openGraphics(idx, theirs.fileno(), 0)
        theirs.close()
        with mine:
            out["banner"] = handshake(mine, proto)
    elif op == "loop":
        n, proto = int(sys.argv[4]), sys.argv[5]
        ok = 0
        for _ in range(n):
            fd = dom.openGraphicsFD(0, 0)
            with socket.socket(fileno=fd) as s:
                if handshake(s, proto)[:4] in ("RFB ", "REDQ"):
                    ok += 1
        out["ok"] = ok
    elif op == "hold":
        idx, proto, other = int(sys.argv[4]), sys.argv[5], sys.argv[6]
        fd = dom.openGraphicsFD(idx, 0)
        s = socket.socket(fileno=fd)
        out["banner"] = handshake(s, proto)
        print(json.dumps({"ready": True, "banner": out["banner"]}), flush=True)
        sys.stdin.readline()
        s.settimeout(30)
        try:
            while s.recv(4096):
                pass
            out["ended"] = True
        except socket.timeout:
            out["ended"] = False
        except OSError as e:
            out["ended"] = True
            out["error"] = str(e)
        s.close()
        fd = conn.lookupByName(other).openGraphicsFD(0, 0)
        with socket.socket(fileno=fd) as s2:
            out["other_banner"] = handshake(s2, proto)
    elif op == "refuse":
        try:
            dom.openGraphicsFD(int(sys.argv[4]), 0)
            out["refused"] = False
        except libvirt.libvirtError as e:
            out["refused"] = True
            out["error"] = str(e)
            out["code"] = e.get_error_code()
    elif op == "files":
        with open("/dev/null", "rb") as f:
            try:
                dom.createWithFiles([f.fileno()], 0)
                out["refused"] = False
            except libvirt.libvirtError as e:
                out["refused"] = True
                out["error"] = str(e)
                out["code"] = e.get_error_code()
    out["domains"] = names(conn)
    out["alive"] = conn.isAlive() == 1
    print(json.dumps(out), flush=True)
    conn.close()


if __name__ == "__main__":
    main()
