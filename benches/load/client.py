#!/usr/bin/env python3
"""Sends N requests over one keep-alive loopback connection and fails unless every one
answers 200. Used by instructions.sh.

    client.py PORT PATH TOKEN_FILE N
"""
import http.client
import sys

port, path, token_file, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(token_file) as f:
    token = f.read().strip()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
headers = {"Authorization": "Bearer " + token}
for i in range(n):
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"client.py: request {i} answered {r.status}")
conn.close()
