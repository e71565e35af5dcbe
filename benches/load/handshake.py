#!/usr/bin/env python3
"""A new TLS connection per request, one at a time, for DURATION seconds: the handshake
load of run.sh's TLS pass (wrk keeps connections open and resumes sessions behind your back).

    handshake.py URL DURATION full|resume|full12|resume12 [HEADER_FILE]

full:   every connection is a full handshake (no session is ever offered); a resumed one is
        counted as an error.
resume: the first connection is full, every later one offers the session (TLS 1.3 ticket)
        the previous connection received, as a browser does; the resumed share is reported.
full12, resume12: the same over TLS 1.2 (resumption there is an abbreviated handshake, without
        the key exchange that a TLS 1.3 resumption keeps).

Each request is `GET path HTTP/1.1` with `Connection: close` (and the first line of
HEADER_FILE, "Name: value"); the certificate is not checked (loopback, the harness's own).
Prints one line: RESULT requests=N resumed=R non2xx=X sockerr=E duration_us=D
"""
import socket
import ssl
import sys
import time
import urllib.parse

url, duration, shape = sys.argv[1], float(sys.argv[2]), sys.argv[3]
if shape not in ("full", "resume", "full12", "resume12"):
    sys.exit(f"handshake.py: shape must be full, resume, full12 or resume12, not {shape!r}")
resume = shape.startswith("resume")
extra = ""
if len(sys.argv) > 4:
    with open(sys.argv[4]) as f:
        line = f.readline().strip()
    if line:
        extra = line + "\r\n"
u = urllib.parse.urlsplit(url)
host, port = u.hostname, u.port or 443
path = (u.path or "/") + (f"?{u.query}" if u.query else "")
request = f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\n{extra}Connection: close\r\n\r\n".encode()

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
if shape.endswith("12"):
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
if not resume:
    # No tickets asked for, and none kept: every handshake is full.
    ctx.options |= ssl.OP_NO_TICKET

requests = resumed = non2xx = sockerr = 0
session = None
start = time.monotonic()
end = start + duration
while time.monotonic() < end:
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with ctx.wrap_socket(raw, server_hostname=host, session=session if resume else None) as s:
                s.sendall(request)
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if s.session_reused:
                    resumed += 1
                if resume:
                    # The tickets of TLS 1.3 arrive after the handshake: the session is read
                    # once the response is.
                    session = s.session
    except (OSError, ssl.SSLError):
        sockerr += 1
        continue
    requests += 1
    if not data.startswith(b"HTTP/1.1 2"):
        non2xx += 1
elapsed = time.monotonic() - start
print(f"RESULT requests={requests} resumed={resumed} non2xx={non2xx} sockerr={sockerr} duration_us={int(elapsed * 1e6)}")
