#!/usr/bin/env python3
"""A tiny loopback identity provider for the load harness (run.sh's session, abac and apikey
modes), stdlib only. It signs with mint.py's RS256 key and Signer, so its tokens carry the
issuer, audience and kid of every other harness token. It approves every login at once.

    idp.py --port PORT --key KEY.pem --client ID:SECRET --api-key KEY [--api-key KEY...]

Endpoints (Auther's paths, see /work/shared/CONTRACT.md):
  GET  /.well-known/openid-configuration   discovery (also at /api/auth/.well-known/...); the
                                          document names mint.ISSUER, the endpoints are here
  GET  /api/auth/jwks                     the JWKS
  GET  /api/auth/oauth2/authorize         no login page: 302 straight back to redirect_uri with
                                          code, state and iss (RFC 9207)
  POST /api/auth/oauth2/token             authorization_code (client_secret_basic or _post,
                                          PKCE S256 checked) and refresh_token grants: an RS256
                                          id_token (aud = client id, the authorize nonce) and a
                                          JWT access token for mint.AUDIENCE granting invoice:read
  POST /api/auth/check-permission         the live ABAC check: allowed unless entityId starts
                                          with "deny" (a denial is 200 {"allowed": false})
  POST /api/auth/api-key/exchange         a registered key -> {"token": JWT, expiresIn 900, ...};
                                          any other key -> 401 invalid_api_key
Every call is counted; GET /stats answers the counts as JSON (the harness prints them).
"""
import argparse, base64, hashlib, json, secrets, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

from mint import AUDIENCE, ISSUER, Signer, b64u, claims

ACCESS_TTL = 3600      # session access tokens: a bench run never reaches the refresh
API_KEY_TTL = 900      # exchanged API-key tokens, as Auther issues them
NAMESPACE = "client_bench"

state_lock = threading.Lock()
codes = {}             # code -> what the token request must match, and the id_token's nonce
refresh_tokens = {}    # refresh token -> client id
stats = {}             # endpoint -> calls


def count(name):
    with state_lock:
        stats[name] = stats.get(name, 0) + 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, error, message):
        self.reply(status, {"error": error, "message": message})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path in ("/.well-known/openid-configuration", "/api/auth/.well-known/openid-configuration"):
            count("discovery")
            return self.reply(200, DISCOVERY)
        if url.path == "/api/auth/jwks":
            count("jwks")
            return self.reply(200, SIGNER.jwks())
        if url.path == "/api/auth/oauth2/authorize":
            count("authorize")
            return self.authorize(parse_qs(url.query))
        if url.path == "/stats":
            with state_lock:
                return self.reply(200, dict(stats))
        self.error(404, "not_found", url.path)

    def do_POST(self):
        path = urlsplit(self.path).path
        if path == "/api/auth/oauth2/token":
            count("token")
            return self.token(parse_qs(self.body().decode()))
        if path == "/api/auth/check-permission":
            count("check_permission")
            return self.check_permission()
        if path == "/api/auth/api-key/exchange":
            count("api_key_exchange")
            return self.exchange()
        self.error(404, "not_found", path)

    # ---------------------------------------------------------------- the code flow
    def authorize(self, q):
        one = lambda k: (q.get(k) or [""])[0]
        client_id, redirect_uri = one("client_id"), one("redirect_uri")
        if client_id not in CLIENTS or not redirect_uri.startswith("http"):
            return self.error(400, "invalid_request", "unknown client_id or no redirect_uri")
        if one("response_type") != "code" or one("code_challenge_method") != "S256":
            return self.error(400, "invalid_request", "response_type=code with PKCE S256 only")
        code = secrets.token_urlsafe(24)
        with state_lock:
            codes[code] = {"client_id": client_id, "redirect_uri": redirect_uri, "nonce": one("nonce"),
                           "challenge": one("code_challenge"), "expires": time.time() + 60}
        back = redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(
            {"code": code, "state": one("state"), "iss": ISSUER})
        self.reply(302, None, [("Location", back)])

    def client_auth(self, form):
        """The client id whose credentials the token request carries (basic or post), or None."""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                cid, _, secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except ValueError:
                return None
            cid, secret = unquote_plus(cid), unquote_plus(secret)
        else:
            cid, secret = (form.get("client_id") or [""])[0], (form.get("client_secret") or [""])[0]
        return cid if CLIENTS.get(cid) == secret and secret else None

    def token(self, form):
        one = lambda k: (form.get(k) or [""])[0]
        cid = self.client_auth(form)
        if cid is None:
            return self.reply(401, {"error": "invalid_client"})
        nonce = None
        if one("grant_type") == "authorization_code":
            with state_lock:
                grant = codes.pop(one("code"), None)
            if grant is None or grant["expires"] < time.time() or grant["client_id"] != cid \
                    or grant["redirect_uri"] != one("redirect_uri"):
                return self.reply(400, {"error": "invalid_grant"})
            verifier = one("code_verifier").encode()
            if b64u(hashlib.sha256(verifier).digest()) != grant["challenge"]:
                return self.reply(400, {"error": "invalid_grant", "error_description": "PKCE verifier mismatch"})
            nonce = grant["nonce"]
        elif one("grant_type") == "refresh_token":
            with state_lock:
                if refresh_tokens.get(one("refresh_token")) != cid:
                    return self.reply(400, {"error": "invalid_grant"})
        else:
            return self.reply(400, {"error": "unsupported_grant_type"})
        now = int(time.time())
        user = dict(sub="session_user", email="session.user@example.com", email_verified=True, iat=now)
        access = SIGNER.jwt(claims(now, **user, azp=cid, exp=now + ACCESS_TTL,
                                   permissions={f"{NAMESPACE}:invoice": ["read"]}))
        id_claims = dict(iss=ISSUER, aud=cid, azp=cid, name="Session User", exp=now + ACCESS_TTL, **user)
        if nonce:
            id_claims["nonce"] = nonce
        refresh = secrets.token_urlsafe(24)
        with state_lock:
            refresh_tokens[refresh] = cid
        self.reply(200, {"access_token": access, "token_type": "Bearer", "expires_in": ACCESS_TTL,
                         "id_token": SIGNER.jwt(id_claims), "refresh_token": refresh, "scope": "openid email profile"})

    # ---------------------------------------------------------------- Auther's extensions
    def check_permission(self):
        if not (self.headers.get("Authorization", "").startswith("Bearer ") or self.headers.get("x-api-key")):
            return self.error(401, "unauthorized", "send the caller's bearer token or API key")
        try:
            req = json.loads(self.body())
            entity_type, entity_id, permission = req["entityType"], str(req.get("entityId", "")), req["permission"]
        except (ValueError, KeyError, TypeError):
            return self.error(400, "missing_fields", "entityType and permission are required")
        self.reply(200, {"allowed": not entity_id.startswith("deny"), "entityType": entity_type, "entityId": entity_id,
                         "permission": permission, "subjectType": "user", "subjectId": "bench"})

    def exchange(self):
        try:
            key = json.loads(self.body())["apiKey"]
        except (ValueError, KeyError, TypeError):
            return self.error(400, "missing_api_key", "send {\"apiKey\": ...}")
        if key not in API_KEYS:
            return self.error(401, "invalid_api_key", "unknown API key")
        now = int(time.time())
        c = claims(now, sub="apikey_owner", email="machine@example.com", exp=now + API_KEY_TTL,
                   apiKeyId="key_bench", scope="api_key_exchange", permissions={f"{NAMESPACE}:invoice": ["read"]})
        del c["azp"]   # a key's token is issued to no OAuth client
        token = SIGNER.jwt(c)
        expires_at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now + API_KEY_TTL))
        self.reply(200, {"token": token, "tokenType": "Bearer", "expiresIn": API_KEY_TTL, "expiresAt": expires_at})

    def log_message(self, *args):
        pass


def main():
    global SIGNER, CLIENTS, API_KEYS, DISCOVERY
    ap = argparse.ArgumentParser(description="loopback IdP for benches/load/run.sh")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True, help="RSA private key (openssl genrsa), as for mint.py")
    ap.add_argument("--client", action="append", default=[], help="ID:SECRET of a confidential client")
    ap.add_argument("--api-key", action="append", default=[], help="an API key the exchange accepts")
    a = ap.parse_args()
    SIGNER = Signer(a.key)
    CLIENTS = dict(c.split(":", 1) for c in a.client)
    API_KEYS = set(a.api_key)
    base = f"http://127.0.0.1:{a.port}"
    DISCOVERY = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{base}/api/auth/oauth2/authorize",
        "token_endpoint": f"{base}/api/auth/oauth2/token",
        "jwks_uri": f"{base}/api/auth/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile", "offline_access"],
    }
    print(f"idp.py: {ISSUER} on {base} (audience {AUDIENCE})", file=sys.stderr, flush=True)
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
