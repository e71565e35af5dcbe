#!/usr/bin/env python3
"""The soak's load: a fixed-rate mix of browser sign-ins, session, bearer, API-key and live
check calls and invalid requests against one authgate on loopback, stdlib only. Every request
has an expected status; anything else is counted as unexpected. Prints one JSON line of
counts when the time is up (run.sh turns it into the table).

    driver.py --gateway PORT --idp PORT --tokens DIR --api-key KEY --rate N --seconds S

Kinds (one in every 20 requests, in a fixed interleaved order): login (a full sign-in, four
hops, counted once with its last hop's status), session (a signed-in cookie), bearer (one
token, cached), bearer-rotating (3000 distinct tokens through a small cache: verifies and
evictions), apikey, abac (live check for one of 500 entities: decisions cached and expired)
and invalid (ten kinds of refusal, each with its own expected status).
"""
import argparse, http.client, itertools, json, random, sys, threading, time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

local = threading.local()
counts = Counter()            # (kind, status) -> n
unexpected = Counter()        # (kind, detail) -> n
lock = threading.Lock()
sessions = []                 # session cookie headers from completed sign-ins


def conn(port):
    pool = getattr(local, "conns", None)
    if pool is None:
        pool = local.conns = {}
    if port not in pool:
        pool[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    return pool[port]


def get(port, path, headers=None, method="GET"):
    """(status, headers) of one request over this thread's keep-alive connection to port."""
    for attempt in (0, 1):
        c = conn(port)
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            r.read()
            if r.getheader("connection", "").lower() == "close":
                c.close()
            return r.status, r.headers
        except (http.client.HTTPException, OSError):
            c.close()
            local.conns.pop(port, None)
            if attempt:
                raise


def record(kind, status, want, detail=None):
    with lock:
        counts[(kind, status)] += 1
        if status not in want:
            unexpected[(kind, detail or str(status))] += 1


def cookies_from(headers, jar):
    for h in headers.get_all("set-cookie") or []:
        pair = h.split(";", 1)[0]
        name, _, value = pair.partition("=")
        if "max-age=0" in h.lower().replace(" ", ""):
            jar.pop(name, None)
        else:
            jar[name] = value


def cookie_header(jar):
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def login(a):
    """Page → authorize → callback → page, as a browser: each hop must answer as expected."""
    jar, page = {}, "/api/invoices/42"
    html = {"Accept": "text/html"}
    s, h = get(a.gateway, page, html)
    if s != 302 or "/api/auth/oauth2/authorize" not in (h.get("location") or ""):
        return record("login", s, (), f"hop 1 answered {s}")
    cookies_from(h, jar)
    u = urlsplit(h["location"])
    s, h = get(a.idp, f"{u.path}?{u.query}")
    if s != 302 or "/_authgate/callback" not in (h.get("location") or ""):
        return record("login", s, (), f"hop 2 answered {s}")
    u = urlsplit(h["location"])
    s, h = get(a.gateway, f"{u.path}?{u.query}", {**html, "Cookie": cookie_header(jar)})
    if s != 302:
        return record("login", s, (), f"hop 3 answered {s}")
    cookies_from(h, jar)
    s, h = get(a.gateway, page, {**html, "Cookie": cookie_header(jar)})
    record("login", s, (200,), f"hop 4 answered {s}")
    if s == 200 and "authgate" in jar:
        with lock:
            sessions.append(f"authgate={jar['authgate']}")
            del sessions[:-50]


def session(a):
    with lock:
        cookie = random.choice(sessions) if sessions else None
    if cookie is None:
        return login(a)
    s, _ = get(a.gateway, "/api/invoices/7", {"Cookie": cookie, "Accept": "text/html"})
    record("session", s, (200,))


def bearer(a):
    s, _ = get(a.gateway, "/api/invoices/42", {"Authorization": f"Bearer {a.valid}"})
    record("bearer", s, (200,))


def bearer_rotating(a):
    token = next(a.rotation)
    s, _ = get(a.gateway, "/api/invoices/42", {"Authorization": f"Bearer {token}"})
    record("bearer-rotating", s, (200,))


def apikey(a):
    s, _ = get(a.gateway, "/api/invoices/42", {"x-api-key": a.api_key})
    record("apikey", s, (200,))


def abac(a):
    n = random.randrange(500)
    entity, want = (f"deny{n}", 403) if n % 10 == 0 else (str(n), 200)
    s, _ = get(a.gateway, f"/api/invoices/{entity}/refund", {"Authorization": f"Bearer {a.abac}"})
    record("abac", s, (want,))


INVALID = [
    # (what, method, path, headers, expected status)
    ("no-credential", "GET", "/api/invoices/42", {"Accept": "application/json"}, 401),
    ("expired", "GET", "/api/invoices/42", "expired", 401),
    ("bad-signature", "GET", "/api/invoices/42", "badsig", 401),
    ("wrong-audience", "GET", "/api/invoices/42", "wrongaud", 401),
    ("no-permission", "GET", "/api/invoices/42", "noperm", 403),
    ("garbage-bearer", "GET", "/api/invoices/42", {"Authorization": "Bearer !!not a token!!"}, 401),
    ("unknown-api-key", "GET", "/api/invoices/42", {"x-api-key": "ak_live_unknown"}, 401),
    ("encoded-slash", "GET", "/public/..%2Fapi/invoices/42", {}, 400),
    ("no-route", "GET", "/nowhere", {}, 404),
    ("wrong-method", "DELETE", "/api/invoices/42", "valid", 405),
]


def invalid(a):
    what, method, path, headers, want = INVALID[next(a.invalid_turn) % len(INVALID)]
    if isinstance(headers, str):
        headers = {"Authorization": f"Bearer {a.tokens[headers]}"}
    s, _ = get(a.gateway, path, headers, method)
    record(f"invalid:{what}", s, (want,))


def public(a):
    s, _ = get(a.gateway, "/public/hello")
    record("public", s, (200,))


# One cycle of 20: the mix, interleaved so every kind runs all the time.
MIX = [bearer, invalid, apikey, bearer_rotating, abac, session, public, bearer, invalid, login,
       bearer, apikey, bearer_rotating, abac, invalid, session, bearer, invalid, bearer_rotating, public]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", type=int, required=True)
    p.add_argument("--idp", type=int, required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--rate", type=float, default=50)
    p.add_argument("--seconds", type=float, default=600)
    a = p.parse_args()
    folder = a.tokens
    read = lambda n: open(f"{folder}/{n}").read().strip()
    a.tokens = {n: read(f"{n}.jwt") for n in ("valid", "expired", "badsig", "wrongaud", "noperm", "abac")}
    a.valid, a.abac = a.tokens["valid"], a.tokens["abac"]
    a.rotation = itertools.cycle(read("cold.txt").split())
    a.invalid_turn = itertools.count()
    errors = Counter()

    def run(fn):
        try:
            fn(a)
        except Exception as e:  # a connection error is a finding: count it
            with lock:
                errors[f"{fn.__name__}: {type(e).__name__}"] += 1

    start = time.monotonic()
    late = 0
    with ThreadPoolExecutor(max_workers=32) as pool:
        for i in itertools.count():
            due = start + i / a.rate
            if due - start >= a.seconds:
                break
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -1:
                late += 1
            pool.submit(run, MIX[i % len(MIX)])
    took = time.monotonic() - start
    print(json.dumps({
        "seconds": round(took, 1), "rate": a.rate, "sent": sum(counts.values()) + sum(errors.values()),
        "late_by_over_1s": late,
        "counts": [[k, s, n] for (k, s), n in sorted(counts.items())],
        "unexpected": [[k, d, n] for (k, d), n in sorted(unexpected.items())],
        "errors": dict(errors),
    }))


if __name__ == "__main__":
    main()
