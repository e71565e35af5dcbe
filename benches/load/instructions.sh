#!/usr/bin/env bash
# User-space instructions per request of a release authgate (1 worker thread) under callgrind:
# REQUESTS requests over one keep-alive connection after a warm-up that is not counted
# (callgrind starts with instrumentation off and is switched on only around the measured
# requests). Instruction counts are repeatable to <1% whatever else the machine is doing.
#
# Modes (each a separate authgate under callgrind, measured side by side):
#   bearer   a cached RS256 token on a permission-checked route (the default)
#   none     an auth = "none" route            bare     tuned bare Pingora (examples/bare_proxy)
#   session  a session cookie (real sign-in)   abac     bearer + a cached live ABAC decision
#   apikey   x-api-key, exchanged token cached cold     a never-seen token every request
#
# TLS modes (not guarded, measured only): the same proxy serving HTTPS with an ECDSA P-256
# self-signed certificate for 127.0.0.1 (authgate `[proxy] tls`, bare_proxy CERT KEY), driven by
# h2load over one keep-alive connection (`-c1 -m1`), so that HTTP/2's cost separates from TLS's:
#   h2-bearer  h2-none  h2-bare  h2-bare-bearer     HTTP/2 (ALPN h2)
#   tls-bearer tls-none tls-bare tls-bare-bearer    HTTP/1.1 on the same TLS listener (h2load --h1)
# bare-bearer is bare Pingora sent the bearer mode's request (its path and ~700-byte token): the
# floor for bearer over HTTP/2, whose header decoding (HPACK) grows with the token. It also runs
# over plain HTTP/1.1 (`bare-bearer`).
# The TLS handshake is left out of the count: a second measured run of one request on a new
# connection is subtracted, per request = (T(REQUESTS) - T(1)) / (REQUESTS - 1). Needs h2load
# (nghttp2-client). AUTHGATE_BIN and BARE_BIN name the binaries to measure (each skips its build).
#
# The CI regression guard: every guarded mode (bearer session abac apikey) measured is compared
# with its line `MODE COUNT` in the committed baseline file of the build profile
# (benches/load/instructions.baseline for release, instructions.PROFILE.baseline for another);
# exit 1 when one is over it by more than the tolerance, or has no baseline. CI measures
# "bearer session abac apikey" with `--profile guard --jobs 2`.
#
#   benches/load/instructions.sh [--no-build] [--update] [--requests N] [--tolerance PCT]
#                                [--profile release|guard] [--jobs N]
#                                [--modes "bearer none bare session abac apikey cold h2-bearer ..."]
#
#   --no-build   use target/PROFILE/authgate (and examples/bare_proxy) as they are
#   --update     write the measured counts of the guarded modes (bearer session abac apikey)
#                as the new baselines, keeping the lines of modes not measured
#   --profile    the cargo profile to build and measure (default release: fat LTO, what ships
#                and what PERFORMANCE.md reports; guard: CI's, no LTO, builds several times faster)
#   --jobs N     measure N modes at a time (default 1): the counts do not depend on the load,
#                each mode runs its own proxy under callgrind on its own ports
#
# Prints `MODE: N instructions/request (baseline B, tolerance T%)` per guarded mode. Exit 0
# within tolerance, 1 on a regression, 2 when it could not measure. Needs valgrind, python3,
# openssl, curl.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASELINE_FILE=$HERE/instructions.baseline
REQUESTS=2000
WARMUP=300
TOLERANCE=${TOLERANCE:-5}
BUILD=1
UPDATE=0
MODES=bearer
PROFILE=release
JOBS=1
PORT_BASE=${PORT_BASE:-18580}

while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0; shift ;;
    --update) UPDATE=1; shift ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --tolerance) TOLERANCE=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) echo "instructions.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

fail() { echo "instructions.sh: $*" >&2; exit 2; }
[[ "$PROFILE" =~ ^[a-z][a-z0-9_-]*$ ]] || fail "--profile $PROFILE: not a cargo profile name"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || fail "--jobs $JOBS: a positive number"
[ "$PROFILE" = release ] || BASELINE_FILE=$HERE/instructions.$PROFILE.baseline
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v valgrind >/dev/null || ! command -v curl >/dev/null; then   # CI images lack valgrind
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind curl >/dev/null
fi
for tool in valgrind callgrind_control python3 openssl curl; do
  command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install valgrind python3 openssl curl)"
done

TLS_MODES=0
for m in $MODES; do
  case "$m" in
    bearer|none|bare|bare-bearer|session|abac|apikey|cold) ;;
    h2-bearer|h2-none|h2-bare|h2-bare-bearer|tls-bearer|tls-none|tls-bare|tls-bare-bearer) TLS_MODES=1 ;;
    *) fail "unknown mode $m (bearer none bare bare-bearer session abac apikey cold; h2- or tls- before bearer none bare bare-bearer)" ;;
  esac
done
if [ "$TLS_MODES" = 1 ]; then
  command -v h2load >/dev/null || fail "h2load is missing (apt-get install nghttp2-client)"
fi
OUT=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
AUTHGATE=${AUTHGATE_BIN:-$OUT/authgate}
BARE=${BARE_BIN:-$OUT/examples/bare_proxy}
if [ "$BUILD" = 1 ] && [ -z "${AUTHGATE_BIN:-}" ]; then
  # What ships: the build without default features (no `authgate demo`), as the Dockerfile's.
  (cd "$ROOT" && cargo build --profile "$PROFILE" --locked --quiet -p authgate --no-default-features) || fail "cargo build --profile $PROFILE failed"
  if [[ " $MODES " == *bare* ]] && [ -z "${BARE_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --profile "$PROFILE" --locked --quiet -p authgate --no-default-features --example bare_proxy) || fail "cargo build --example bare_proxy failed"
  fi
fi
[ -x "$AUTHGATE" ] || fail "$AUTHGATE missing"

WORK=$(mktemp -d /tmp/authgate-instr.XXXXXX)
STARTED=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # The proxies that measuring jobs started (each job writes its own pid there).
  [ -s "$WORK/pids" ] && while read -r pid; do STARTED+=("$pid"); done <"$WORK/pids"
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
COLD_TOKENS=$((REQUESTS + WARMUP))
openssl genrsa -out "$WORK/key.pem" 2048 2>/dev/null
python3 "$HERE/mint.py" "$WORK/key.pem" "$WORK/tokens" "$([[ " $MODES " == *" cold "* ]] && echo "$COLD_TOKENS" || echo 0)" 2>/dev/null
TOKENS=$WORK/tokens
if [ "$TLS_MODES" = 1 ]; then   # the certificate run.sh's TLS listeners serve: ECDSA P-256, self-signed
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$WORK/tls-key.pem" -out "$WORK/tls-cert.pem" 2>/dev/null \
    || fail "openssl could not make the TLS certificate"
fi
API_KEY=ak_live_instr_$(openssl rand -hex 16)

ORIGIN_PORT=$PORT_BASE; IDP_PORT=$((PORT_BASE + 3)); IDP_PID=
python3 "$HERE/origin.py" "$ORIGIN_PORT" "$TOKENS/jwks.json" >"$WORK/origin.out" 2>&1 &
STARTED+=($!)
idp() { # started before measuring when a mode needs it: session, abac and apikey talk to it
  [ -n "$IDP_PID" ] && return 0
  (cd "$HERE" && exec python3 idp.py --port "$IDP_PORT" --key "$WORK/key.pem" --client bench:bench-secret --api-key "$API_KEY") >"$WORK/idp.out" 2>&1 &
  IDP_PID=$!; STARTED+=("$IDP_PID")
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$IDP_PORT") 2>/dev/null && return 0; sleep 0.1; done
  fail "idp.py did not start: $(cat "$WORK/idp.out")"
}

# h2client PROTO URL N HEADER_FILE: N requests by h2load over one keep-alive TLS connection,
# HTTP/2 (PROTO h2) or HTTP/1.1 (h1); fails unless ALPN chose PROTO and every one answered 2xx.
h2client() {
  local proto=$1 url=$2 n=$3 hdr=$4 out args=(-n "$3" -c 1 -m 1) alpn=h2
  [ "$proto" = h1 ] && { args+=(--h1); alpn=http/1.1; }
  [ -s "$hdr" ] && args+=(-H "$(head -n1 "$hdr")")
  out=$(timeout 600 h2load "${args[@]}" "$url" 2>&1) || { echo "$out" >&2; return 1; }
  if ! grep -q "^Application protocol: $alpn\$" <<<"$out" \
     || ! grep -q "^requests: $n total, $n started, $n done, $n succeeded, 0 failed" <<<"$out" \
     || ! grep -q "^status codes: $n 2xx" <<<"$out"; then
    echo "$out" >&2; return 1
  fi
}

# measure MODE INDEX: starts the proxy under callgrind on the ports of the INDEXth mode, warms
# up, counts REQUESTS requests; writes "PER DUMP" to $WORK/result.MODE.
measure() {
  local mode=$1 port=$((PORT_BASE + 10 + 3 * $2)) path=/api/invoices/42 hdr="$WORK/$1.hdr" cmd pid
  local admin=$((port + 1)) cache=100000 proto=plain scheme=http base=$1
  case "$mode" in
    h2-*) proto=h2; scheme=https; base=${mode#h2-} ;;
    tls-*) proto=h1; scheme=https; base=${mode#tls-} ;;
  esac
  : >"$hdr"
  case "$base" in
    bearer|bare-bearer) printf 'Authorization: Bearer %s\n' "$(cat "$TOKENS/valid.jwt")" >"$hdr" ;;
    none|bare) path=/public/hello ;;
    abac) path=/api/invoices/42/refund; printf 'Authorization: Bearer %s\n' "$(cat "$TOKENS/abac.jwt")" >"$hdr" ;;
    apikey) printf 'x-api-key: %s\n' "$API_KEY" >"$hdr" ;;
    session) ;;
    cold) cache=1; sed 's/^/Authorization: Bearer /' "$TOKENS/cold.txt" >"$hdr" ;;
  esac
  if [ "$base" = bare ] || [ "$base" = bare-bearer ]; then
    [ -x "$BARE" ] || fail "$BARE missing (cargo build --profile $PROFILE --example bare_proxy)"
    cmd=("$BARE" "127.0.0.1:$port" "127.0.0.1:$ORIGIN_PORT" 1)
    [ "$proto" = plain ] || cmd+=("$WORK/tls-cert.pem" "$WORK/tls-key.pem")
  else
    sed -e "s#{LISTEN}#127.0.0.1:$port#; s#{ADMIN}#127.0.0.1:$admin#; s#{PORT}#$port#" \
        -e "s#{JWKS}#http://127.0.0.1:$ORIGIN_PORT/jwks.json#; s#{ORIGIN}#127.0.0.1:$ORIGIN_PORT#" \
        -e "s#{IDP}#http://127.0.0.1:$IDP_PORT#g" \
        -e "s#{THREADS}#1#; s#{CACHE_TOKENS}#$cache#" "$HERE/authgate.toml" >"$WORK/$mode.toml"
    if [ "$proto" != plain ]; then   # HTTPS, and the bench client's origin is https (as run.sh does)
      sed -i -e "/^\[proxy\]/a tls = { cert = \"$WORK/tls-cert.pem\", key = \"$WORK/tls-key.pem\" }" \
        -e "s#^origins = \[\"http://127.0.0.1:$port\"\]#origins = [\"https://127.0.0.1:$port\"]#" "$WORK/$mode.toml"
      grep -q '^origins = \["https://' "$WORK/$mode.toml" || fail "authgate.toml: the bench client's origins line changed; update instructions.sh"
    fi
    cmd=("$AUTHGATE" run --config "$WORK/$mode.toml")
  fi
  AUTHGATE_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.$mode.%p" \
    "${cmd[@]}" >"$WORK/$mode.out" 2>&1 &
  pid=$!
  echo "$pid" >>"$WORK/pids"
  local ready=0 probe=http://127.0.0.1:$admin/readyz
  [ "$base" = bare ] || [ "$base" = bare-bearer ] && probe=$scheme://127.0.0.1:$port/public/hello
  for _ in $(seq 600); do   # up to 60 s: start-up under valgrind is slow
    if [ "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$probe")" = 200 ]; then ready=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ "$ready" = 1 ] || { cat "$WORK/$mode.out" >&2; fail "$mode did not become ready under valgrind"; }
  if [ "$mode" = session ]; then
    # One real sign-in: page → IdP authorize → callback (sets the cookie) → page.
    curl -s -o /dev/null -L --max-redirs 5 --max-time 20 -b "$WORK/jar" -c "$WORK/jar" -H 'Accept: text/html' "http://127.0.0.1:$port$path"
    local id; id=$(awk -F'\t' '$6 == "authgate" {print $7}' "$WORK/jar")
    [ -n "$id" ] || fail "session: the sign-in set no authgate cookie ($(cat "$WORK/idp.out" | tail -3))"
    printf 'Cookie: authgate=%s\n' "$id" >"$hdr"
  fi
  local client=(timeout 600 python3 "$HERE/client.py" "$port" "$path")
  [ "$proto" = plain ] || client=(h2client "$proto" "https://127.0.0.1:$port$path")
  "${client[@]}" "$WARMUP" "$hdr" || fail "$mode: warm-up requests failed"
  if [ "$mode" = cold ]; then   # the measured requests use tokens the warm-up did not
    tail -n +"$((WARMUP + 1))" "$hdr" >"$hdr.measured"; hdr=$hdr.measured
  fi
  callgrind_control --zero "$pid" >/dev/null 2>&1 || fail "callgrind_control --zero failed"
  callgrind_control --instr=on "$pid" >/dev/null 2>&1 || fail "callgrind_control --instr=on failed"
  "${client[@]}" "$REQUESTS" "$hdr" || fail "$mode: measured requests failed"
  callgrind_control --instr=off "$pid" >/dev/null 2>&1 || fail "callgrind_control --instr=off failed"
  callgrind_control --dump=measured "$pid" >/dev/null 2>&1 || fail "callgrind_control --dump failed"
  local dump total
  dump=$(grep -l '^desc: Trigger: .*measured' "$WORK"/callgrind."$mode".* 2>/dev/null | head -n1) || true
  [ -n "$dump" ] || fail "no callgrind dump found for $mode in $WORK"
  total=$(awk '/^totals:/ {print $2; exit}' "$dump")
  [ -n "$total" ] || fail "no instruction total in $dump"
  if [ "$proto" = plain ]; then
    PER=$((total / REQUESTS))
  else   # the handshake, one request and the close on a new connection, subtracted
    [ "$REQUESTS" -gt 1 ] || fail "--requests must be over 1 for the TLS modes"
    callgrind_control --zero "$pid" >/dev/null 2>&1 || fail "callgrind_control --zero failed"
    callgrind_control --instr=on "$pid" >/dev/null 2>&1 || fail "callgrind_control --instr=on failed"
    "${client[@]}" 1 "$hdr" || fail "$mode: the one-request connection failed"
    callgrind_control --instr=off "$pid" >/dev/null 2>&1 || fail "callgrind_control --instr=off failed"
    callgrind_control --dump=connection "$pid" >/dev/null 2>&1 || fail "callgrind_control --dump failed"
    local one
    one=$(grep -l '^desc: Trigger: .*connection' "$WORK"/callgrind."$mode".* 2>/dev/null | head -n1) || true
    [ -n "$one" ] || fail "no callgrind dump of the one-request connection for $mode in $WORK"
    one=$(awk '/^totals:/ {print $2; exit}' "$one")
    [ -n "$one" ] || fail "no instruction total in the one-request dump of $mode"
    PER=$(( (total - one) / (REQUESTS - 1) ))
  fi
  kill -TERM "$pid" 2>/dev/null || true
  echo "$PER $dump" >"$WORK/result.$mode"
}

GUARDED="bearer session abac apikey"
declare -A RESULT DUMPS
RESULTS=()
for m in $MODES; do case "$m" in session|abac|apikey|*-session|*-abac|*-apikey) idp ;; esac; done
# JOBS modes at a time, each in its own subshell (a failure there exits it with 2).
index=0
jobs_running=()
job_failed=0
for m in $MODES; do
  measure "$m" "$index" & jobs_running+=($!)
  index=$((index + 1))
  if [ ${#jobs_running[@]} -ge "$JOBS" ]; then
    wait "${jobs_running[0]}" || job_failed=1
    jobs_running=("${jobs_running[@]:1}")
  fi
done
for j in "${jobs_running[@]}"; do wait "$j" || job_failed=1; done
[ "$job_failed" = 0 ] || fail "a mode could not be measured (above)"
for m in $MODES; do
  [ -s "$WORK/result.$m" ] || fail "$m: no result"
  read -r per dump <"$WORK/result.$m"
  RESULT[$m]=$per; DUMPS[$m]=$dump; RESULTS+=("$m")
  [[ " $GUARDED " == *" $m "* ]] || echo "$m: $per instructions/request"
done

if [ ${#RESULTS[@]} -gt 1 ]; then
  ref_mode=bearer; [ -n "${RESULT[bearer]:-}" ] || ref_mode=${RESULTS[0]}
  pct() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%+.1f%%", (a / b - 1) * 100}'; }
  echo
  printf '| mode | instructions/request | vs %s | over bare Pingora (same protocol) |\n|---|--:|--:|--:|\n' "$ref_mode"
  for m in "${RESULTS[@]}"; do
    # The floor: bare Pingora over the same protocol (h2-*, tls-* or plain HTTP/1.1).
    case "$m" in h2-*) floor=h2-bare ;; tls-*) floor=tls-bare ;; *) floor=bare ;; esac
    over=-; [ -n "${RESULT[$floor]:-}" ] && over="$(( RESULT[$m] - RESULT[$floor] )) ($(pct "${RESULT[$m]}" "${RESULT[$floor]}"))"
    printf '| %s | %s | %s | %s |\n' "$m" "${RESULT[$m]}" "$(pct "${RESULT[$m]}" "${RESULT[$ref_mode]}")" "$over"
  done
  echo
fi

declare -A BASE
if [ -s "$BASELINE_FILE" ]; then
  while read -r m n _; do
    [ -n "${m:-}" ] || continue
    case "$m" in \#*) continue ;; esac
    [[ "$m" =~ ^[0-9]+$ ]] && { n=$m; m=bearer; }   # the old one-number file: bearer
    BASE[$m]=$n
  done <"$BASELINE_FILE"
fi

if [ "$UPDATE" = 1 ]; then
  for m in "${RESULTS[@]}"; do [[ " $GUARDED " == *" $m "* ]] && BASE[$m]=${RESULT[$m]}; done
  {
    echo "# instructions/request per mode, written by benches/load/instructions.sh --update"
    for m in $GUARDED; do [ -n "${BASE[$m]:-}" ] && echo "$m ${BASE[$m]}"; done
  } >"$BASELINE_FILE"
  for m in "${RESULTS[@]}"; do [[ " $GUARDED " == *" $m "* ]] && echo "$m: ${RESULT[$m]} instructions/request (new baseline written to ${BASELINE_FILE#"$ROOT"/})"; done
  exit 0
fi

status=0
for m in "${RESULTS[@]}"; do
  [[ " $GUARDED " == *" $m "* ]] || continue
  baseline=${BASE[$m]:-}
  if [ -z "$baseline" ]; then
    echo "instructions.sh: $m: ${RESULT[$m]} instructions/request and no baseline for it in ${BASELINE_FILE#"$ROOT"/}: run with --profile $PROFILE --update" >&2
    status=1
    continue
  fi
  per=${RESULT[$m]}
  echo "$m: $per instructions/request (baseline $baseline, tolerance $TOLERANCE%)"
  limit=$(awk -v b="$baseline" -v t="$TOLERANCE" 'BEGIN{printf "%d", b * (1 + t / 100)}')
  if [ "$per" -gt "$limit" ]; then
    echo "instructions.sh: $m regression: $per > $limit (baseline $baseline + $TOLERANCE%); profile with callgrind_annotate ${DUMPS[$m]}" >&2
    status=1
  elif [ "$per" -lt "$(awk -v b="$baseline" -v t="$TOLERANCE" 'BEGIN{printf "%d", b * (1 - t / 100)}')" ]; then
    echo "instructions.sh: $m is faster than its baseline by more than $TOLERANCE%: consider --update" >&2
  fi
done
if [ "$status" = 1 ]; then
  trap - EXIT; for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  echo "callgrind dumps kept in $WORK" >&2
fi
exit $status
