#!/usr/bin/env python3
"""Sends N requests over one keep-alive loopback connection and fails unless every one
answers 200. Used by instructions.sh.

    client.py PORT PATH N [HEADER_FILE]

HEADER_FILE holds "Name: value" lines; request i sends line i modulo their number (one line:
the same header every time; many: a token per request, for the cold mode). EXTRA_HEADERS, when
set, names a file of "Name: value" lines sent on every request as well (browser-headers.txt: what
a browser sends beside its credential).
"""
import os
import http.client
import sys

port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
headers = []
if len(sys.argv) > 4:
    with open(sys.argv[4]) as f:
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in f if ":" in line]
extra = {}
if os.environ.get("EXTRA_HEADERS"):
    with open(os.environ["EXTRA_HEADERS"]) as f:
        extra = dict(tuple(part.strip() for part in line.split(":", 1)) for line in f if ":" in line)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for i in range(n):
    sent = dict(extra)
    if headers:
        sent.update([headers[i % len(headers)]])
    conn.request("GET", path, headers=sent)
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"client.py: request {i} answered {r.status}")
conn.close()
