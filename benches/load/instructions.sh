#!/usr/bin/env bash
# Regression guard for the bearer hot path: user-space instructions per request of a release
# authgate (1 worker thread) under callgrind, for REQUESTS requests with a cached RS256 token
# (a permission-checked route), after a warm-up that is not counted (callgrind starts with
# instrumentation off and is switched on only around the measured requests). Compares with
# the committed baseline and exits 1 when the count exceeds it by more than the tolerance.
#
#   benches/load/instructions.sh [--no-build] [--update] [--requests N] [--tolerance PCT]
#
#   --no-build   use target/release/authgate as it is (or $AUTHGATE_BIN)
#   --update     write the measured count as the new baseline (benches/load/instructions.baseline)
#
# Prints `N instructions/request (baseline B, tolerance T%)`. Exit 0 within tolerance,
# 1 on regression, 2 when it could not measure. Needs valgrind, python3, openssl, curl.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASELINE_FILE=$HERE/instructions.baseline
REQUESTS=2000
WARMUP=300
TOLERANCE=${TOLERANCE:-5}
BUILD=1
UPDATE=0
PORT_BASE=${PORT_BASE:-18580}

while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0; shift ;;
    --update) UPDATE=1; shift ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --tolerance) TOLERANCE=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "instructions.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

fail() { echo "instructions.sh: $*" >&2; exit 2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v valgrind >/dev/null || ! command -v curl >/dev/null; then   # CI images lack valgrind
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind curl >/dev/null
fi
for tool in valgrind callgrind_control python3 openssl curl; do
  command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install valgrind python3 openssl curl)"
done

AUTHGATE=${AUTHGATE_BIN:-$ROOT/target/release/authgate}
if [ "$BUILD" = 1 ] && [ -z "${AUTHGATE_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked --quiet) || fail "cargo build --release failed"
fi
[ -x "$AUTHGATE" ] || fail "$AUTHGATE missing"

WORK=$(mktemp -d /tmp/authgate-instr.XXXXXX)
STARTED=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ $rc -ge 2 ] || [ -n "${KEEP:-}" ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Tokens and JWKS: a fresh key each run (the count does not depend on the key's value).
openssl genrsa -out "$WORK/key.pem" 2048 2>/dev/null
python3 "$HERE/mint.py" "$WORK/key.pem" "$WORK/tokens" 0 2>/dev/null

ORIGIN_PORT=$PORT_BASE; PROXY_PORT=$((PORT_BASE + 1)); ADMIN_PORT=$((PORT_BASE + 2))
python3 "$HERE/origin.py" "$ORIGIN_PORT" "$WORK/tokens/jwks.json" >"$WORK/origin.out" 2>&1 &
STARTED+=($!)
# No IdP runs here ({IDP} is a port nothing listens on): a cached bearer token never calls it.
sed -e "s#{LISTEN}#127.0.0.1:$PROXY_PORT#; s#{ADMIN}#127.0.0.1:$ADMIN_PORT#; s#{PORT}#$PROXY_PORT#" \
    -e "s#{JWKS}#http://127.0.0.1:$ORIGIN_PORT/jwks.json#; s#{ORIGIN}#127.0.0.1:$ORIGIN_PORT#" \
    -e "s#{IDP}#http://127.0.0.1:$((PORT_BASE + 3))#g" \
    -e "s#{THREADS}#1#; s#{CACHE_TOKENS}#100000#" "$HERE/authgate.toml" >"$WORK/authgate.toml"

AUTHGATE_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out.%p" \
  "$AUTHGATE" run --config "$WORK/authgate.toml" >"$WORK/authgate.out" 2>&1 &
AG_PID=$!
STARTED+=("$AG_PID")

ready=0
for _ in $(seq 600); do   # up to 60 s: start-up under valgrind is slow
  if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$ADMIN_PORT/readyz")" = 200 ]; then ready=1; break; fi
  kill -0 "$AG_PID" 2>/dev/null || break
  sleep 0.1
done
[ "$ready" = 1 ] || { cat "$WORK/authgate.out" >&2; fail "authgate did not become ready under valgrind"; }

client() { timeout 300 python3 "$HERE/client.py" "$PROXY_PORT" /api/invoices/42 "$WORK/tokens/valid.jwt" "$1"; }
client "$WARMUP" || fail "warm-up requests failed"
callgrind_control --zero "$AG_PID" >/dev/null || fail "callgrind_control --zero failed"
callgrind_control --instr=on "$AG_PID" >/dev/null || fail "callgrind_control --instr=on failed"
client "$REQUESTS" || fail "measured requests failed"
callgrind_control --instr=off "$AG_PID" >/dev/null || fail "callgrind_control --instr=off failed"
callgrind_control --dump=measured "$AG_PID" >/dev/null || fail "callgrind_control --dump failed"

dump=$(grep -l '^desc: Trigger: .*measured' "$WORK"/callgrind.out.* 2>/dev/null | head -n1) || true
[ -n "$dump" ] || fail "no callgrind dump found in $WORK"
total=$(awk '/^totals:/ {print $2; exit}' "$dump")
[ -n "$total" ] || fail "no instruction total in $dump"
per=$((total / REQUESTS))

if [ "$UPDATE" = 1 ]; then
  echo "$per" >"$BASELINE_FILE"
  echo "$per instructions/request (new baseline written to ${BASELINE_FILE#"$ROOT"/})"
  exit 0
fi
[ -s "$BASELINE_FILE" ] || fail "no baseline in $BASELINE_FILE: run with --update"
baseline=$(tr -dc '0-9' <"$BASELINE_FILE")
echo "$per instructions/request (baseline $baseline, tolerance $TOLERANCE%)"
limit=$(awk -v b="$baseline" -v t="$TOLERANCE" 'BEGIN{printf "%d", b * (1 + t / 100)}')
if [ "$per" -gt "$limit" ]; then
  echo "instructions.sh: regression: $per > $limit (baseline $baseline + $TOLERANCE%); profile with callgrind_annotate $dump" >&2
  trap - EXIT; for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  echo "callgrind dump kept in $WORK" >&2
  exit 1
fi
if [ "$per" -lt "$(awk -v b="$baseline" -v t="$TOLERANCE" 'BEGIN{printf "%d", b * (1 - t / 100)}')" ]; then
  echo "instructions.sh: faster than the baseline by more than $TOLERANCE%: consider --update" >&2
fi
exit 0
