#!/usr/bin/env bash
# authgate's soak: one release authgate on loopback with the load harness's IdP (idp.py),
# origin (origin.py), config template and tokens (mint.py), driven by driver.py at a fixed
# rate for a bounded time with a mix of browser sign-ins, session, bearer, API-key and live
# check calls and invalid requests. Then prints a table: requests by kind and status,
# unexpected statuses (must be 0), panics or errors in authgate's log (must be 0), RSS after
# warm-up and at the end (growth under 10%) and open file descriptors at start and end.
# Exits non-zero when a check fails. See PERFORMANCE.md ("Soak").
#
#   benches/soak/run.sh [--seconds S] [--rate N] [--warmup S] [--cache-tokens N] [--profile P]
#                       [--no-build] [--keep]
#
# Defaults: 600 s at 50 requests/s, RSS baseline after 60 s, a 500-token verified cache (the
# rotating bearer tokens keep evicting), the release profile (CI's smoke: guard, which the
# instructions guard has just built). Everything it starts it stops on exit, Ctrl-C included.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LOAD=$ROOT/benches/load

SECONDS_TOTAL=600
RATE=50
WARMUP=60
CACHE_TOKENS=500
BUILD=1
PROFILE=release
KEEP=0
BASE_PORT=${BASE_PORT:-18580}

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_TOTAL=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --cache-tokens) CACHE_TOKENS=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
[ "$WARMUP" -lt "$SECONDS_TOTAL" ] || { echo "run.sh: --warmup must be shorter than --seconds" >&2; exit 2; }

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'soak: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d /tmp/authgate-soak.XXXXXX)
STARTED=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then echo "logs and configs kept in $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # NAME COMMAND...: in the background, its pid in LAST_PID
  local name=$1; shift
  "$@" >"$WORK/$name.out" 2>&1 &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  cat "$WORK/$2.out" >&2 || true
  die "$2 did not listen on 127.0.0.1:$1"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

for tool in curl openssl python3; do command -v "$tool" >/dev/null || die "$tool is needed"; done
[[ "$PROFILE" =~ ^[a-z][a-z0-9_-]*$ ]] || die "--profile $PROFILE: not a cargo profile name"
AUTHGATE=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/authgate
if [ "$BUILD" = 1 ]; then
  log "cargo build --profile $PROFILE"
  (cd "$ROOT" && cargo build --profile "$PROFILE" --locked --quiet -p authgate --no-default-features)
fi
[ -x "$AUTHGATE" ] || die "$AUTHGATE missing (run without --no-build)"

# Tokens: the load harness's key and minted set, shared through its cache.
TOKEN_CACHE=${TOKEN_CACHE:-$HOME/.cache/authgate-load}
mkdir -p "$TOKEN_CACHE"
[ -s "$TOKEN_CACHE/key.pem" ] || openssl genrsa -out "$TOKEN_CACHE/key.pem" 2048 2>/dev/null
if [ ! -s "$TOKEN_CACHE/tokens/cold.txt" ] || [ "$(wc -l <"$TOKEN_CACHE/tokens/cold.txt")" -lt 3000 ] \
   || [ ! -s "$TOKEN_CACHE/tokens/abac.jwt" ] || [ -n "$(find "$TOKEN_CACHE/tokens/valid.jwt" -mmin +240 2>/dev/null)" ]; then
  log "minting tokens"
  python3 "$LOAD/mint.py" "$TOKEN_CACHE/key.pem" "$TOKEN_CACHE/tokens" 3000
fi
cp -r "$TOKEN_CACHE/tokens" "$WORK/tokens"

ORIGIN_PORT=$BASE_PORT; IDP_PORT=$((BASE_PORT + 1)); PORT=$((BASE_PORT + 2)); ADMIN=$((BASE_PORT + 3))
API_KEY=ak_live_soak_$(openssl rand -hex 16)
start origin python3 "$LOAD/origin.py" "$ORIGIN_PORT" "$WORK/tokens/jwks.json"
start idp python3 "$LOAD/idp.py" --port "$IDP_PORT" --key "$TOKEN_CACHE/key.pem" --client bench:bench-secret --api-key "$API_KEY"
wait_port "$ORIGIN_PORT" origin; wait_port "$IDP_PORT" idp
sed -e "s#{LISTEN}#127.0.0.1:$PORT#g" -e "s#{ADMIN}#127.0.0.1:$ADMIN#g" -e "s#{PORT}#$PORT#g" \
    -e "s#{JWKS}#http://127.0.0.1:$ORIGIN_PORT/jwks.json#g" -e "s#{ORIGIN}#127.0.0.1:$ORIGIN_PORT#g" \
    -e "s#{IDP}#http://127.0.0.1:$IDP_PORT#g" -e "s#{THREADS}#2#g" -e "s#{CACHE_TOKENS}#$CACHE_TOKENS#g" \
    "$LOAD/authgate.toml" >"$WORK/authgate.toml"
export AUTHGATE_LOG=${AUTHGATE_LOG:-warn}
start authgate "$AUTHGATE" run --config "$WORK/authgate.toml"; AG=$LAST_PID
wait_port "$PORT" authgate
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN/readyz")" = 200 ] && break
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN/readyz")" = 200 ] || die "authgate never became ready"

FD_START=$(fds "$AG"); RSS_START=$(rss_kib "$AG")
log "soak: ${SECONDS_TOTAL}s at ${RATE} req/s (work dir $WORK)"
python3 "$HERE/driver.py" --gateway "$PORT" --idp "$IDP_PORT" --tokens "$WORK/tokens" --api-key "$API_KEY" \
  --rate "$RATE" --seconds "$SECONDS_TOTAL" >"$WORK/driver.json" &
DRIVER=$!; STARTED+=("$DRIVER")
: >"$WORK/rss.txt"
elapsed=0; RSS_WARM=
while kill -0 "$DRIVER" 2>/dev/null; do
  sleep 5; elapsed=$((elapsed + 5))
  kill -0 "$AG" 2>/dev/null || die "authgate exited during the soak (see $WORK/authgate.out)"
  echo "$elapsed $(rss_kib "$AG") $(fds "$AG")" >>"$WORK/rss.txt"
  if [ -z "$RSS_WARM" ] && [ "$elapsed" -ge "$WARMUP" ]; then RSS_WARM=$(rss_kib "$AG"); fi
done
wait "$DRIVER" || die "driver.py failed (see $WORK)"
sleep 1
RSS_END=$(rss_kib "$AG"); FD_END=$(fds "$AG")
RSS_WARM=${RSS_WARM:-$RSS_END}
PANICS=$(grep -ci 'panick' "$WORK/authgate.out" || true)
# Pingora logs a lost race for an idle upstream connection in its pool at ERROR level; the
# request then opens a fresh connection (no request fails). Counted apart from every other ERROR.
POOL_RACES=$(grep -c ' ERROR pingora_core::connectors: failed to acquire reusable stream' "$WORK/authgate.out" || true)
ERRORS=$(grep ' ERROR ' "$WORK/authgate.out" | grep -vc 'failed to acquire reusable stream' || true)
IDP_STATS=$(curl -s "http://127.0.0.1:$IDP_PORT/stats" || echo '{}')

python3 - "$WORK/driver.json" "$RSS_START" "$RSS_WARM" "$RSS_END" "$FD_START" "$FD_END" "$PANICS" "$ERRORS" "$WARMUP" "$IDP_STATS" "$WORK/rss.txt" "$POOL_RACES" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rss0, rssw, rsse, fd0, fde, panics, errors, warm = map(int, sys.argv[2:10])
idp = sys.argv[10]
series = [l.split() for l in open(sys.argv[11]) if l.strip()]
pool_races = int(sys.argv[12])
print(f"\n| soak | {d['seconds']:.0f} s at {d['rate']:g} req/s: {d['sent']} requests sent |")
print("|---|---|")
print("\n| kind | status | requests |\n|---|---|---:|")
for kind, status, n in d["counts"]:
    print(f"| {kind} | {status} | {n} |")
unexpected = sum(n for _, _, n in d["unexpected"])
errs = sum(d["errors"].values())
growth = (rsse - rssw) / rssw * 100 if rssw else 0.0
checks = [
    ("unexpected statuses", str(unexpected), unexpected == 0),
    ("driver errors (connection refused/reset, timeouts)", str(errs), errs == 0),
    ("panics in authgate's log", str(panics), panics == 0),
    ("ERROR lines in authgate's log", str(errors), errors == 0),
    ("pingora's \"failed to acquire reusable stream\" (a pool race; the request reconnects)", str(pool_races), True),
    (f"RSS at start / after {warm} s warm-up / at end (MiB)", f"{rss0/1024:.1f} / {rssw/1024:.1f} / {rsse/1024:.1f} ({growth:+.1f}% after warm-up)", growth < 10),
    ("open file descriptors at start / end", f"{fd0} / {fde}", fde <= fd0 + 40),
    ("requests sent more than 1 s late (driver could not keep the rate)", str(d["late_by_over_1s"]), True),
]
print("\n| check | value | ok |\n|---|---|---|")
for name, value, ok in checks:
    print(f"| {name} | {value} | {'yes' if ok else '**NO**'} |")
for kind, detail, n in d["unexpected"]:
    print(f"unexpected: {kind}: {detail} x{n}")
for what, n in d["errors"].items():
    print(f"driver error: {what} x{n}")
print(f"\nIdP calls: {idp}")
peak = max((int(s[1]) for s in series), default=rsse)
print(f"RSS samples every 5 s: min {min((int(s[1]) for s in series), default=rsse)/1024:.1f} MiB, peak {peak/1024:.1f} MiB; fds peak {max((int(s[2]) for s in series), default=fde)}")
sys.exit(0 if all(ok for _, _, ok in checks) else 1)
PY
