#!/usr/bin/env python3
"""A tiny loopback origin for instructions.sh: HTTP/1.1 keep-alive, answers `hello` to
everything and serves the JWKS at /jwks.json.

    origin.py PORT JWKS_FILE
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/jwks.json":
            with open(JWKS, "rb") as f:
                body, ctype = f.read(), "application/json"
        else:
            body, ctype = b"hello from origin\n", "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    JWKS = sys.argv[2]
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
