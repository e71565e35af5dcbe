#!/usr/bin/env bash
# authgate's load harness: authgate in each mode against nginx (plain proxy) and HAProxy
# (`jwt_verify`), all on loopback, one core for the proxy under test and the other for wrk
# and the origin. Checks correctness first, then runs interleaved, bounded wrk rounds and
# prints req/s, p50/p99 and CPU µs/request with ratios to nginx. See PERFORMANCE.md.
#
#   benches/load/run.sh [--duration S] [--rounds N] [--connections C] [--modes "none bearer cold"]
#                       [--cold-tokens N] [--paced MS] [--handshake-clients N] [--no-build] [--keep]
#
# --handshake-clients N: handshake.py processes at once in the tls mode's handshake shapes (default 4).
# --paced MS adds a latency pass at a fixed, unsaturated load (each connection waits MS ms
# after every response): its p50/p99 over direct-to-origin are added latency, not queueing.
#
# Modes: bare none bearer cold bearer2t session abac apikey tls (session, abac and apikey also start
# idp.py; bare is tuned bare Pingora, examples/bare_proxy, the floor under authgate's proxy path;
# tls adds nginx, HAProxy, bare Pingora and authgate terminating TLS with one ECDSA P-256
# certificate: keep-alive rows in the table, then a TLS pass: a new connection per request with
# full handshakes, the same with session resumption, and HTTP/2 (h2load); see PERFORMANCE.md).
# Everything it starts it stops on exit, Ctrl-C included. Loopback only.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

DURATION=10          # seconds per wrk run
ROUNDS=3             # interleaved rounds; the table shows the median of each target's runs
CONNECTIONS=50
MODES="bare none bearer cold session abac apikey"
COLD_TOKENS=3000     # distinct tokens the cold mode cycles through
PACED=0              # ms each connection waits between requests in the latency pass (0: no pass)
HANDSHAKE_CLIENTS=4   # handshake.py processes at once in the TLS pass (each one connection at a time)
BUILD=1
KEEP=0
BASE_PORT=${BASE_PORT:-18480}

usage() { sed -n '2,/^set -euo/{/^set -euo/!p}' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --cold-tokens) COLD_TOKENS=$2; shift 2 ;;
    --paced) PACED=$2; shift 2 ;;
    --handshake-clients) HANDSHAKE_CLIENTS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- processes and cleanup
WORK=$(mktemp -d /tmp/authgate-load.XXXXXX)
chmod 755 "$WORK"   # nginx workers (nobody) serve the JWKS from here
STARTED=()           # pids of every server this script started

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

# Starts "$@" in the background as NAME, pinned to CPU list CPUS when pinning is possible;
# its pid is left in LAST_PID.
start() { # CPUS NAME COMMAND...
  local cpus=$1 name=$2; shift 2
  if [ -n "$cpus" ]; then set -- taskset -c "$cpus" "$@"; fi
  "$@" >"$WORK/$name.out" 2>&1 &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  cat "$WORK/$name.out" >&2 || true
  die "$name did not listen on 127.0.0.1:$port"
}

# CPU ticks (utime + stime) of a process and its direct children (nginx's workers).
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] || continue
    # Fields after the parenthesised command: utime is field 14, stime 15.
    total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  echo $total
}
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------- tools and build
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for tool in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client curl:curl openssl:openssl python3:python3 taskset:util-linux cmake:cmake; do
  command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

AUTHGATE=$ROOT/target/release/authgate
if [ "$BUILD" = 1 ]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --locked --quiet)
  if [[ " $MODES " == *" bare "* ]]; then (cd "$ROOT" && cargo build --release --locked --quiet --example bare_proxy); fi
fi
[ -x "$AUTHGATE" ] || die "$AUTHGATE missing (run without --no-build)"
BARE=$ROOT/target/release/examples/bare_proxy

# One core for the proxy under test, the other for wrk and the origin.
if [ "$(nproc)" -ge 2 ]; then PROXY_CPU=0; LOAD_CPU=1; BOTH_CPUS=0,1; else PROXY_CPU=; LOAD_CPU=; BOTH_CPUS=; log "one core: not pinning"; fi

# ---------------------------------------------------------------- tokens
# Keys and minted tokens are kept between runs (the cold set takes a while to mint in Python).
TOKEN_CACHE=${TOKEN_CACHE:-$HOME/.cache/authgate-load}
mkdir -p "$TOKEN_CACHE"
if [ ! -s "$TOKEN_CACHE/key.pem" ]; then openssl genrsa -out "$TOKEN_CACHE/key.pem" 2048 2>/dev/null; fi
if [ ! -s "$TOKEN_CACHE/tokens/cold.txt" ] || [ "$(wc -l <"$TOKEN_CACHE/tokens/cold.txt")" -lt "$COLD_TOKENS" ] \
   || [ ! -s "$TOKEN_CACHE/tokens/abac.jwt" ] || [ -n "$(find "$TOKEN_CACHE/tokens/valid.jwt" -mmin +240 2>/dev/null)" ]; then
  log "minting tokens ($COLD_TOKENS cold)"
  python3 "$HERE/mint.py" "$TOKEN_CACHE/key.pem" "$TOKEN_CACHE/tokens" "$COLD_TOKENS"
fi
mkdir -p "$WORK/tokens"
cp "$TOKEN_CACHE"/tokens/* "$WORK/tokens/"
head -n "$COLD_TOKENS" "$TOKEN_CACHE/tokens/cold.txt" >"$WORK/tokens/cold.txt"
openssl rsa -in "$TOKEN_CACHE/key.pem" -pubout -out "$WORK/tokens/pub.pem" 2>/dev/null
TOKENS=$WORK/tokens
# The TLS certificate every TLS listener serves (ECDSA P-256, self-signed for 127.0.0.1 and
# localhost), kept with the tokens; HAProxy wants certificate and key in one file.
TLS_DIR=$TOKEN_CACHE/tls
if [ ! -s "$TLS_DIR/cert.pem" ]; then
  mkdir -p "$TLS_DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null
fi
mkdir -p "$WORK/tls"
cp "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" "$WORK/tls/"
cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" >"$WORK/tls/haproxy.pem"
TLS_CERT=$WORK/tls/cert.pem; TLS_KEY=$WORK/tls/key.pem
export AUTHGATE_LOG=warn   # refusals during the checks are expected; keep the logs quiet

# ---------------------------------------------------------------- servers
ORIGIN_PORT=$BASE_PORT
NGINX_PORT=$((BASE_PORT + 1))
HAPROXY_PORT=$((BASE_PORT + 2))
IDP_PORT=$((BASE_PORT + 3)); IDP_URL=http://127.0.0.1:$IDP_PORT
NGINX_TLS_PORT=$((BASE_PORT + 4))
HAPROXY_TLS_PORT=$((BASE_PORT + 5))
NEXT_PORT=$((BASE_PORT + 10))   # authgate instances take two ports each from here

fill() { # template output key=value...
  local in=$1 out=$2; shift 2
  local args=()
  for kv in "$@"; do args+=(-e "s#{${kv%%=*}}#${kv#*=}#g"); done
  sed "${args[@]}" "$in" >"$out"
}

log "starting origin, nginx, HAProxy (work dir $WORK)"
fill "$HERE/nginx-origin.conf" "$WORK/origin.conf" WORK="$WORK" ORIGIN_PORT=$ORIGIN_PORT
start "$LOAD_CPU" origin nginx -c "$WORK/origin.conf" -p "$WORK"; ORIGIN_PID=$LAST_PID
fill "$HERE/nginx-proxy.conf" "$WORK/nginx.conf" WORK="$WORK" NGINX_PORT=$NGINX_PORT ORIGIN_PORT=$ORIGIN_PORT \
  NGINX_TLS_PORT=$NGINX_TLS_PORT TLS_CERT="$TLS_CERT" TLS_KEY="$TLS_KEY"
start "$PROXY_CPU" nginx nginx -c "$WORK/nginx.conf" -p "$WORK"; NGINX_PID=$LAST_PID
fill "$HERE/haproxy.cfg" "$WORK/haproxy.cfg" WORK="$WORK" HAPROXY_PORT=$HAPROXY_PORT ORIGIN_PORT=$ORIGIN_PORT \
  HAPROXY_TLS_PORT=$HAPROXY_TLS_PORT TLS_PEM="$WORK/tls/haproxy.pem"
start "$PROXY_CPU" haproxy haproxy -db -f "$WORK/haproxy.cfg"; HAPROXY_PID=$LAST_PID
wait_port $ORIGIN_PORT origin; wait_port $NGINX_PORT nginx; wait_port $HAPROXY_PORT haproxy

# authgate instances, started on first use: NAME THREADS CACHE_TOKENS CPUS [tls]
# (tls: the listener serves HTTPS with the harness's certificate, `[proxy.tls]`, HTTP/2 by ALPN)
declare -A AG_PORT AG_ADMIN AG_PID
authgate_instance() {
  local name=$1 threads=$2 cache=$3 cpus=$4 tls=${5:-}
  [ -n "${AG_PID[$name]:-}" ] && return 0
  local port=$NEXT_PORT admin=$((NEXT_PORT + 1))
  NEXT_PORT=$((NEXT_PORT + 2))
  fill "$HERE/authgate.toml" "$WORK/authgate-$name.toml" LISTEN=127.0.0.1:$port ADMIN=127.0.0.1:$admin PORT=$port \
    JWKS=http://127.0.0.1:$ORIGIN_PORT/jwks.json ORIGIN=127.0.0.1:$ORIGIN_PORT IDP=$IDP_URL THREADS=$threads CACHE_TOKENS=$cache
  if [ "$tls" = tls ]; then   # HTTPS, and the bench client's origin is https
    sed -i -e "/^\[proxy\]/a tls = { cert = \"$TLS_CERT\", key = \"$TLS_KEY\" }" \
      -e "s#^origins = \[\"http://127.0.0.1:$port\"\]#origins = [\"https://127.0.0.1:$port\"]#" "$WORK/authgate-$name.toml"
    grep -q "^origins = \[\"https://" "$WORK/authgate-$name.toml" || die "authgate.toml: the bench client's origins line changed; update run.sh"
  fi
  start "$cpus" "authgate-$name" "$AUTHGATE" run --config "$WORK/authgate-$name.toml"; AG_PID[$name]=$LAST_PID
  AG_PORT[$name]=$port; AG_ADMIN[$name]=$admin
  wait_port "$port" "authgate-$name"
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  die "authgate-$name never loaded the JWKS"
}

# The loopback IdP (idp.py: discovery, JWKS, auto-approving authorize, token, check-permission,
# API-key exchange), started on first use by the session, abac and apikey modes. It signs with
# the harness's key; authgate calls it only to sign in, for ABAC decisions it has not cached and
# to exchange an API key it has not cached, so under load it idles (pinned beside wrk anyway).
IDP_PID=
API_KEY=ak_live_bench_$(openssl rand -hex 16)
idp_server() {
  [ -n "$IDP_PID" ] && return 0
  start "$LOAD_CPU" idp python3 "$HERE/idp.py" --port "$IDP_PORT" --key "$TOKEN_CACHE/key.pem" \
    --client bench:bench-secret --api-key "$API_KEY"   # the secret is authgate.toml's client_secret
  IDP_PID=$LAST_PID
  wait_port "$IDP_PORT" idp
}

# A browser sign-in through authgate, hop by hop, with curl and a cookie jar: the protected page
# (as a navigation) → 302 to the IdP's authorize → 302 back to /_authgate/callback with code,
# state and iss → authgate exchanges the code, verifies the id_token, sets the session cookie and
# → 302 to the page → 200. Leaves the session cookie's value in SESSION_ID.
session_login() { # BASE_URL JAR
  local base=$1 jar=$2 url=$1/api/invoices/42 hop code next
  local want=("302 $IDP_URL/api/auth/oauth2/authorize?" "302 $base/_authgate/callback?" "302 $base/api/invoices/42" "200 ")
  : >"$jar"
  for hop in 0 1 2 3; do
    read -r code next < <(curl -s -o /dev/null --max-time 10 -b "$jar" -c "$jar" -H 'Accept: text/html' \
                            -w '%{http_code} %{redirect_url}\n' "$url" || true)
    case "$code ${next:-}" in
      "${want[$hop]}"*) ;;
      *) cat "$WORK/idp.out" >&2 || true; die "session login, hop $((hop + 1)) ($url): got $code ${next:-}, want ${want[$hop]}…" ;;
    esac
    url=${next:-}
  done
  # Netscape cookie jar: name in field 6, value in 7 (HttpOnly lines are prefixed, same fields).
  SESSION_ID=$(awk -F'\t' '$6 == "authgate" {print $7}' "$jar")
  [ -n "$SESSION_ID" ] || die "session login: no authgate cookie in $jar"
  log "signed in through idp.py: page → authorize → callback → page, session cookie set"
}

# ---------------------------------------------------------------- targets and modes
# A target is one row of the table: a process to measure, a URL, a wrk script and its token file.
TARGETS=()
declare -A T_PID T_URL T_SCRIPT T_TOKENS T_NOTE
target() { # NAME PID URL SCRIPT TOKEN_FILE NOTE
  TARGETS+=("$1"); T_PID[$1]=$2; T_URL[$1]=$3; T_SCRIPT[$1]=$4; T_TOKENS[$1]=$5; T_NOTE[$1]=$6
}

target origin-direct "$ORIGIN_PID" "http://127.0.0.1:$ORIGIN_PORT/public/hello" plain "" "no proxy (CPU is the origin's)"
target nginx "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/public/hello" plain "" "plain reverse proxy, the 1.00"
target haproxy-jwt "$HAPROXY_PID" "http://127.0.0.1:$HAPROXY_PORT/api/invoices/42" bearer "$TOKENS/valid.jwt" "jwt_verify on every request"

# authgate's modes: each defines its instance and target, and may add a function to CHECKS
# (run in the correctness phase). To add one, write mode_NAME below and pass it in --modes.
CHECKS=()
mode_none() {
  authgate_instance main 1 100000 "$PROXY_CPU"
  target authgate-none "${AG_PID[main]}" "http://127.0.0.1:${AG_PORT[main]}/public/hello" plain "" "auth = \"none\" route"
}
mode_bearer() {
  authgate_instance main 1 100000 "$PROXY_CPU"
  target authgate-bearer "${AG_PID[main]}" "http://127.0.0.1:${AG_PORT[main]}/api/invoices/42" bearer "$TOKENS/valid.jwt" "bearer + permission, token cached"
}
mode_bare() {
  # Tuned bare Pingora (same runtime settings, allocator, profile and peer options, no work of
  # its own): what authgate adds over it is authgate's own cost.
  [ -x "$BARE" ] || die "$BARE missing (run without --no-build)"
  BARE_PORT=$NEXT_PORT; NEXT_PORT=$((NEXT_PORT + 2))
  start "$PROXY_CPU" bare "$BARE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$ORIGIN_PORT" 1
  wait_port "$BARE_PORT" bare
  CHECKS+=(check_bare)
  target pingora-bare "$LAST_PID" "http://127.0.0.1:$BARE_PORT/public/hello" plain "" "tuned bare Pingora, no auth"
}
check_bare() { expect "pingora-bare" 200 "http://127.0.0.1:$BARE_PORT/public/hello"; }
mode_cold() {
  # A one-entry token cache and $COLD_TOKENS distinct tokens in rotation: every request verifies.
  authgate_instance cold 1 1 "$PROXY_CPU"
  target authgate-cold "${AG_PID[cold]}" "http://127.0.0.1:${AG_PORT[cold]}/api/invoices/42" cold "$TOKENS/cold.txt" "bearer, never-seen tokens (RS256 verify)"
}
mode_bearer2t() {
  # Scaling: 2 worker threads on both cores; wrk and the origin share them (see PERFORMANCE.md).
  authgate_instance two 2 100000 "$BOTH_CPUS"
  target authgate-bearer-2t "${AG_PID[two]}" "http://127.0.0.1:${AG_PORT[two]}/api/invoices/42" bearer "$TOKENS/valid.jwt" "2 threads, unpinned"
}
mode_session() {
  # A browser session: one real sign-in through idp.py, then wrk sends its cookie on every
  # request to the permission-checked route (the session's access token is a JWT for this API,
  # so it goes through the verified-token cache like a bearer token).
  idp_server
  authgate_instance main 1 100000 "$PROXY_CPU"
  session_login "http://127.0.0.1:${AG_PORT[main]}" "$WORK/session.jar"
  printf 'Cookie: authgate=%s\n' "$SESSION_ID" >"$TOKENS/session.hdr"
  CHECKS+=(check_session)
  target authgate-session "${AG_PID[main]}" "http://127.0.0.1:${AG_PORT[main]}/api/invoices/42" header "$TOKENS/session.hdr" "session cookie + permission"
}
mode_abac() {
  # abac.jwt lists invoice:refund in abac_required: the first request asks idp.py's
  # check-permission, every later one reuses authgate's cached decision ([abac] allow_ttl).
  idp_server
  authgate_instance main 1 100000 "$PROXY_CPU"
  CHECKS+=(check_abac)
  target authgate-abac "${AG_PID[main]}" "http://127.0.0.1:${AG_PORT[main]}/api/invoices/42/refund" bearer "$TOKENS/abac.jwt" "bearer + ABAC decision, cached"
}
mode_apikey() {
  # x-api-key on every request: authgate exchanges the key at idp.py once and reuses the
  # verified token until 60 s before it expires (idp.py issues 15-minute tokens).
  idp_server
  authgate_instance main 1 100000 "$PROXY_CPU"
  printf 'x-api-key: %s\n' "$API_KEY" >"$TOKENS/apikey.hdr"
  CHECKS+=(check_apikey)
  target authgate-apikey "${AG_PID[main]}" "http://127.0.0.1:${AG_PORT[main]}/api/invoices/42" header "$TOKENS/apikey.hdr" "API key, exchanged token cached"
}
mode_tls() {
  # The same servers terminating TLS. Keep-alive rows go through the rounds below like the plain
  # ones (wrk over https: one handshake per connection); the TLS pass after them measures
  # handshakes and HTTP/2.
  [ -x "$BARE" ] || die "$BARE missing (run without --no-build)"
  authgate_instance tls 1 100000 "$PROXY_CPU" tls
  BARE_TLS_PORT=$NEXT_PORT; NEXT_PORT=$((NEXT_PORT + 2))
  start "$PROXY_CPU" bare-tls "$BARE" "127.0.0.1:$BARE_TLS_PORT" "127.0.0.1:$ORIGIN_PORT" 1 "$TLS_CERT" "$TLS_KEY"
  BARE_TLS_PID=$LAST_PID
  wait_port "$BARE_TLS_PORT" bare-tls
  CHECKS+=(check_tls)
  TLS_PASS=1
  printf 'Authorization: Bearer %s\n' "$(head -n1 "$TOKENS/valid.jwt")" >"$TOKENS/bearer.hdr"
  # NAME PID URL HEADER_FILE: the TLS pass's targets (keep-alive rows are NAME-tls-ka).
  tls_target nginx "$NGINX_PID" "https://127.0.0.1:$NGINX_TLS_PORT/public/hello" "" "plain reverse proxy"
  tls_target haproxy-jwt "$HAPROXY_PID" "https://127.0.0.1:$HAPROXY_TLS_PORT/api/invoices/42" "$TOKENS/bearer.hdr" "jwt_verify on every request"
  tls_target pingora-bare "$BARE_TLS_PID" "https://127.0.0.1:$BARE_TLS_PORT/public/hello" "" "tuned bare Pingora, no auth"
  tls_target authgate-none "${AG_PID[tls]}" "https://127.0.0.1:${AG_PORT[tls]}/public/hello" "" "auth = \"none\" route"
  tls_target authgate-bearer "${AG_PID[tls]}" "https://127.0.0.1:${AG_PORT[tls]}/api/invoices/42" "$TOKENS/bearer.hdr" "bearer + permission, token cached"
}
TLS_PASS=0
TLS_TARGETS=()
declare -A TLS_PID TLS_URL TLS_HDR TLS_NOTE
tls_target() { # NAME PID URL HEADER_FILE NOTE
  TLS_TARGETS+=("$1"); TLS_PID[$1]=$2; TLS_URL[$1]=$3; TLS_HDR[$1]=$4; TLS_NOTE[$1]=$5
  if [ -n "$4" ]; then target "$1-tls-ka" "$2" "$3" header "$4" "$5, TLS keep-alive"
  else target "$1-tls-ka" "$2" "$3" plain "" "$5, TLS keep-alive"; fi
}
for m in $MODES; do
  declare -F "mode_$m" >/dev/null || die "unknown mode $m (have: $(declare -F | awk '/mode_/{sub("mode_","",$3); printf "%s ", $3}'))"
  "mode_$m"
done

# ---------------------------------------------------------------- correctness first
FAILED=0
verdict() { # NAME GOT WANT
  if [ "$2" = "$3" ]; then printf '  ok    %-44s %s\n' "$1" "$2" >&2
  else printf '  FAIL  %-44s got %s, want %s\n' "$1" "$2" "$3" >&2; FAILED=1; fi
}
expect_h() { # NAME WANT URL [HEADER...]: the status of a GET sending each "Name: value" HEADER
  local name=$1 want=$2 url=$3 h args=()
  shift 3
  for h in "$@"; do args+=(-H "$h"); done
  verdict "$name" "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 ${TLS_CERT:+--cacert "$TLS_CERT"} "${args[@]}" "$url")" "$want"
}
expect() { # NAME WANT URL [TOKEN_FILE]: with the file's first token as a bearer token
  if [ -n "${4:-}" ]; then expect_h "$1" "$2" "$3" "Authorization: Bearer $(head -n1 "$4")"; else expect_h "$1" "$2" "$3"; fi
}
# The value of one series (name and labels exactly as authgate prints them) on an authgate
# instance's admin /metrics; 0 when absent.
metric() { # INSTANCE SERIES
  curl -s --max-time 5 "http://127.0.0.1:${AG_ADMIN[$1]}/metrics" | awk -v s="$2 " 'index($0, s) == 1 {v = $2} END {print v + 0}'
}
verifications() { # INSTANCE RESULT
  metric "$1" "authgate_jwt_verifications_total{result=\"$2\"}"
}
abac_checks() { # INSTANCE RESULT SOURCE
  metric "$1" "authgate_abac_checks_total{result=\"$2\",source=\"$3\"}"
}
key_exchanges() { # INSTANCE RESULT
  metric "$1" "authgate_api_key_exchanges_total{result=\"$2\"}"
}
check_session() {
  local base="http://127.0.0.1:${AG_PORT[main]}" cookie unknown
  cookie=$(head -n1 "$TOKENS/session.hdr")
  unknown=$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n')   # well-formed, never issued
  expect_h "authgate-main session cookie" 200 "$base/api/invoices/42" "$cookie"
  expect_h "authgate-main session info" 200 "$base/_authgate/session" "$cookie"
  expect_h "authgate-main session, permission not granted" 403 "$base/api/invoices/42/refund" "$cookie"
  expect_h "authgate-main garbage cookie" 401 "$base/api/invoices/42" "Cookie: authgate=garbage"
  expect_h "authgate-main unknown session" 401 "$base/api/invoices/42" "Cookie: authgate=$unknown"
  expect_h "authgate-main unknown session, navigation" 302 "$base/api/invoices/42" "Cookie: authgate=$unknown" "Accept: text/html"
}
check_abac() {
  local base="http://127.0.0.1:${AG_PORT[main]}"
  expect "authgate-main abac allowed" 200 "$base/api/invoices/42/refund" "$TOKENS/abac.jwt"
  expect "authgate-main abac allowed, again" 200 "$base/api/invoices/42/refund" "$TOKENS/abac.jwt"
  expect "authgate-main abac denied by the IdP" 403 "$base/api/invoices/deny-7/refund" "$TOKENS/abac.jwt"
  expect "authgate-main abac, refund not granted" 403 "$base/api/invoices/42/refund" "$TOKENS/valid.jwt"
  expect "authgate-main abac, missing token" 401 "$base/api/invoices/42/refund"
  # Two allowed requests: one asked the IdP, one was answered from authgate's decision cache.
  verdict "authgate-main abac allowed: IdP, cache" "$(abac_checks main allowed idp), $(abac_checks main allowed cache)" "1, 1"
  verdict "authgate-main abac denied: IdP" "$(abac_checks main denied idp)" 1
}
check_apikey() {
  local base="http://127.0.0.1:${AG_PORT[main]}"
  expect_h "authgate-main api key" 200 "$base/api/invoices/42" "x-api-key: $API_KEY"
  expect_h "authgate-main api key, again" 200 "$base/api/invoices/42" "x-api-key: $API_KEY"
  expect_h "authgate-main api key, permission not granted" 403 "$base/api/invoices/42/refund" "x-api-key: $API_KEY"
  expect_h "authgate-main bad api key" 401 "$base/api/invoices/42" "x-api-key: ak_live_bench_wrong"
  # Three requests with the key, one exchange at the IdP.
  verdict "authgate-main api key exchanges: ok, refused" "$(key_exchanges main ok), $(key_exchanges main refused)" "1, 1"
}
check_tls() {
  local t url args code
  for t in "${TLS_TARGETS[@]}"; do
    url=${TLS_URL[$t]}; args=()
    [ -n "${TLS_HDR[$t]}" ] && args=(-H "$(head -n1 "${TLS_HDR[$t]}")")
    code=$(curl -s -o /dev/null -w '%{http_code} %{http_version}' --max-time 5 --cacert "$TLS_CERT" --http1.1 "${args[@]}" "$url")
    verdict "$t over TLS, HTTP/1.1" "$code" "200 1.1"
    code=$(curl -s -o /dev/null -w '%{http_code} %{http_version}' --max-time 5 --cacert "$TLS_CERT" --http2 "${args[@]}" "$url")
    verdict "$t over TLS, HTTP/2 by ALPN" "$code" "200 2"
  done
  check_auth "authgate-tls (https)" "https://127.0.0.1:${AG_PORT[tls]}"
  # Each server resumes a session it issued: two connections, the second offers the first's ticket.
  for t in "${TLS_TARGETS[@]}"; do
    verdict "$t resumes (handshake.py resume, 2 s)" \
      "$(python3 "$HERE/handshake.py" "${TLS_URL[$t]}" 2 resume ${TLS_HDR[$t]:+"${TLS_HDR[$t]}"} | awk '{for(i=2;i<=NF;i++){split($i,kv,"="); v[kv[1]]=kv[2]} print (v["requests"] > 1 && v["resumed"] == v["requests"] - 1 && v["non2xx"] == 0) ? "yes" : $0}')" yes
  done
}
check_auth() { # LABEL BASE_URL
  expect "$1 public" 200 "$2/public/hello"
  expect "$1 valid token" 200 "$2/api/invoices/42" "$TOKENS/valid.jwt"
  expect "$1 missing token" 401 "$2/api/invoices/42"
  expect "$1 bad signature" 401 "$2/api/invoices/42" "$TOKENS/badsig.jwt"
  expect "$1 expired" 401 "$2/api/invoices/42" "$TOKENS/expired.jwt"
  expect "$1 wrong audience" 401 "$2/api/invoices/42" "$TOKENS/wrongaud.jwt"
  expect "$1 missing permission" 403 "$2/api/invoices/42" "$TOKENS/noperm.jwt"
}
log "correctness"
expect "origin" 200 "http://127.0.0.1:$ORIGIN_PORT/public/hello"
expect "nginx" 200 "http://127.0.0.1:$NGINX_PORT/public/hello"
check_auth haproxy "http://127.0.0.1:$HAPROXY_PORT"
for inst in "${!AG_PORT[@]}"; do [ "$inst" = tls ] && continue; check_auth "authgate-$inst" "http://127.0.0.1:${AG_PORT[$inst]}"; done
[ -n "${AG_PORT[cold]:-}" ] && expect "authgate-cold a cold token" 200 "http://127.0.0.1:${AG_PORT[cold]}/api/invoices/42" "$TOKENS/cold.txt"
for c in "${CHECKS[@]}"; do "$c"; done
[ "$FAILED" = 0 ] || die "correctness checks failed: no load run"

# ---------------------------------------------------------------- load
for t in plain bearer cold header; do
  cat "$HERE/$t.lua" "$HERE/report.lua" >"$WORK/$t.lua"
  cat "$HERE/$t.lua" "$HERE/pace.lua" "$HERE/report.lua" >"$WORK/$t-paced.lua"
done
declare -A R_RPS R_P50 R_P99 R_CPU P_RPS P_P50 P_P99
run_paced() { # target: one run at the paced, unsaturated load; latency only
  local t=$1 out line
  out=$(TOKEN_FILE=${T_TOKENS[$t]} PACE_MS=$PACED timeout $((DURATION + 30)) \
        ${LOAD_CPU:+taskset -c $LOAD_CPU} wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s \
        -s "$WORK/${T_SCRIPT[$t]}-paced.lua" "${T_URL[$t]}") || die "wrk failed for $t (paced): $out"
  line=$(grep '^RESULT' <<<"$out") || die "no result from wrk for $t: $out"
  eval "local ${line#RESULT }"
  P_RPS[$t]+="$(awk -v n="$requests" -v d="$duration_us" 'BEGIN{printf "%.0f", n / (d / 1e6)}') "; P_P50[$t]+="$p50_us "; P_P99[$t]+="$p99_us "
  printf '  paced   %-20s p50 %6s µs  p99 %6s µs\n' "$t" "$p50_us" "$p99_us" >&2
}
run_once() { # target round
  local t=$1 pid=${T_PID[$1]} before after out line
  before=$(cpu_ticks "$pid")
  out=$(TOKEN_FILE=${T_TOKENS[$t]} timeout $((DURATION + 30)) \
        ${LOAD_CPU:+taskset -c $LOAD_CPU} wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s \
        -s "$WORK/${T_SCRIPT[$t]}.lua" "${T_URL[$t]}") || die "wrk failed for $t: $out"
  after=$(cpu_ticks "$pid")
  line=$(grep '^RESULT' <<<"$out") || die "no result from wrk for $t: $out"
  eval "local ${line#RESULT }"
  [ "$non2xx" = 0 ] && [ "$sockerr" = 0 ] || log "warning: $t had $non2xx non-2xx responses and $sockerr socket errors"
  local rps cpu
  rps=$(awk -v n="$requests" -v d="$duration_us" 'BEGIN{printf "%.0f", n / (d / 1e6)}')
  cpu=$(awk -v a="$before" -v b="$after" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN{printf "%.1f", (b - a) / hz * 1e6 / n}')
  R_RPS[$t]+="$rps "; R_P50[$t]+="$p50_us "; R_P99[$t]+="$p99_us "; R_CPU[$t]+="$cpu "
  printf '  round %s %-20s %8s req/s  p50 %6s µs  p99 %6s µs  CPU %6s µs/req\n' "$2" "$t" "$rps" "$p50_us" "$p99_us" "$cpu" >&2
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

cold_before_verified=0; cold_before_cached=0
if [ -n "${AG_ADMIN[cold]:-}" ]; then
  cold_before_verified=$(verifications cold verified); cold_before_cached=$(verifications cold cached)
fi
# Only the abac target asks for live checks and only the apikey target sends keys: these
# counters of the shared instance, before and after, show their caches held under load.
if [ -n "${AG_ADMIN[main]:-}" ]; then
  abac_before_idp=$(abac_checks main allowed idp); abac_before_cache=$(abac_checks main allowed cache)
  keys_before=$(key_exchanges main ok)
fi
log "load: $ROUNDS rounds × ${#TARGETS[@]} targets × ${DURATION}s, $CONNECTIONS connections, wrk pinned to CPU ${LOAD_CPU:-any}, proxies to CPU ${PROXY_CPU:-any}"
for round in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do run_once "$t" "$round"; sleep 1; done
done
if [ "$PACED" != 0 ]; then
  log "latency pass: $ROUNDS rounds, each connection waiting ${PACED} ms between requests"
  for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do run_paced "$t"; sleep 1; done
  done
fi

# ---------------------------------------------------------------- TLS pass
# A new connection per request ($HANDSHAKE_CLIENTS handshake.py clients, each one connection at a time,
# pinned beside wrk): full handshakes,
# then resumed ones; then HTTP/2 over TLS with h2load (keep-alive, $CONNECTIONS connections).
# Interleaved like the rounds above; CPU µs/request from /proc as above.
declare -A H_FULL H_FULL_RPS H_RES H_RES_RPS H_RES_SHARE H2_CPU H2_RPS H_FULL12 H_RES12 H_RES12_SHARE
run_handshakes() { # target shape round
  local t=$1 shape=$2 pid=${TLS_PID[$1]} before after out line i pids=() requests=0 resumed=0 non2xx=0 sockerr=0 duration_us=0
  before=$(cpu_ticks "$pid")
  for i in $(seq "$HANDSHAKE_CLIENTS"); do
    timeout $((DURATION + 30)) ${LOAD_CPU:+taskset -c $LOAD_CPU} python3 "$HERE/handshake.py" "${TLS_URL[$t]}" "$DURATION" "$shape" \
      ${TLS_HDR[$t]:+"${TLS_HDR[$t]}"} >"$WORK/handshake-$i.out" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || die "handshake.py failed for $t ($shape): $(cat "$WORK/handshake-$((i + 1)).out")"; done
  after=$(cpu_ticks "$pid")
  for i in $(seq "$HANDSHAKE_CLIENTS"); do
    out=$(cat "$WORK/handshake-$i.out")
    line=$(grep '^RESULT' <<<"$out") || die "no result from handshake.py for $t: $out"
    # Sums over the clients; the run lasted as long as the slowest.
    eval "$(awk '{for (i = 2; i <= NF; i++) {split($i, kv, "="); printf "local c_%s=%s; ", kv[1], kv[2]}}' <<<"$line")"
    requests=$((requests + c_requests)); resumed=$((resumed + c_resumed)); non2xx=$((non2xx + c_non2xx)); sockerr=$((sockerr + c_sockerr))
    if [ "$c_duration_us" -gt "$duration_us" ]; then duration_us=$c_duration_us; fi
  done
  [ "$non2xx" = 0 ] && [ "$sockerr" = 0 ] || log "warning: $t ($shape) had $non2xx non-2xx responses and $sockerr socket errors"
  [[ $shape == resume* ]] || [ "$resumed" = 0 ] || die "$t: $resumed of the full handshakes were resumed"
  local rps cpu share
  rps=$(awk -v n="$requests" -v d="$duration_us" 'BEGIN{printf "%.0f", n / (d / 1e6)}')
  cpu=$(awk -v a="$before" -v b="$after" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN{printf "%.1f", (b - a) / hz * 1e6 / n}')
  share=$(awk -v r="$resumed" -v n="$requests" 'BEGIN{printf "%.1f", n ? 100 * r / n : 0}')
  case $shape in
    full) H_FULL[$t]+="$cpu "; H_FULL_RPS[$t]+="$rps " ;;
    resume) H_RES[$t]+="$cpu "; H_RES_RPS[$t]+="$rps "; H_RES_SHARE[$t]+="$share " ;;
    full12) H_FULL12[$t]+="$cpu " ;;
    resume12) H_RES12[$t]+="$cpu "; H_RES12_SHARE[$t]+="$share " ;;
  esac
  printf '  round %s %-16s %-8s %6s req/s  resumed %5s%%  CPU %7s µs/req\n' "$3" "$t" "$shape" "$rps" "$share" "$cpu" >&2
}
run_h2() { # target round
  local t=$1 pid=${TLS_PID[$1]} before after out args=() done ok secs
  [ -n "${TLS_HDR[$t]}" ] && args=(-H "$(head -n1 "${TLS_HDR[$t]}")")
  before=$(cpu_ticks "$pid")
  out=$(timeout $((DURATION + 30)) ${LOAD_CPU:+taskset -c $LOAD_CPU} h2load -t1 -c"$CONNECTIONS" -m1 -D "$DURATION" "${args[@]}" "${TLS_URL[$t]}" 2>&1) \
    || die "h2load failed for $t: $out"
  after=$(cpu_ticks "$pid")
  grep -q 'Application protocol: h2' <<<"$out" || die "h2load did not speak h2 to $t: $out"
  done=$(awk '/^requests:/ {print $8}' <<<"$out"); ok=$(awk '/^status codes:/ {print $3}' <<<"$out")
  secs=$(awk '/^finished in/ {sub("s,", "", $3); print $3}' <<<"$out")
  [ -n "$done" ] && [ "$done" -gt 0 ] || die "no result from h2load for $t: $out"
  [ "$ok" = "$done" ] || log "warning: $t (h2) had $((done - ok)) of $done responses not 2xx"
  local rps cpu
  rps=$(awk -v n="$done" -v s="$secs" 'BEGIN{printf "%.0f", n / s}')
  cpu=$(awk -v a="$before" -v b="$after" -v hz="$CLK_TCK" -v n="$done" 'BEGIN{printf "%.1f", (b - a) / hz * 1e6 / n}')
  H2_CPU[$t]+="$cpu "; H2_RPS[$t]+="$rps "
  printf '  round %s %-16s h2       %6s req/s                  CPU %7s µs/req\n' "$2" "$t" "$rps" "$cpu" >&2
}
if [ "$TLS_PASS" = 1 ]; then
  log "TLS pass: $ROUNDS rounds × ${#TLS_TARGETS[@]} targets × (full, resumed; TLS 1.2 full, resumed; HTTP/2) × ${DURATION}s"
  for round in $(seq "$ROUNDS"); do
    for t in "${TLS_TARGETS[@]}"; do
      run_handshakes "$t" full "$round"; sleep 1
      run_handshakes "$t" resume "$round"; sleep 1
      run_handshakes "$t" full12 "$round"; sleep 1
      run_handshakes "$t" resume12 "$round"; sleep 1
      run_h2 "$t" "$round"; sleep 1
    done
  done
fi

# ---------------------------------------------------------------- table
NGINX_CPU=$(median "${R_CPU[nginx]}")
DIRECT_P99=$(median "${R_P99[origin-direct]}")
{
  echo
  echo "authgate load harness — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), $ROUNDS rounds × ${DURATION}s, $CONNECTIONS connections, medians"
  echo
  printf '| %-20s | %8s | %7s | %7s | %11s | %10s | %15s | %s |\n' target "req/s" "p50 µs" "p99 µs" "CPU µs/req" "CPU ratio" "p99 vs direct" note
  printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "-----------------------" ---------:  --------: --------: ------------: -----------: ----------------: ---
  for t in "${TARGETS[@]}"; do
    cpu=$(median "${R_CPU[$t]}"); p99=$(median "${R_P99[$t]}")
    ratio=$(awk -v a="$NGINX_CPU" -v b="$cpu" 'BEGIN{printf "%.2f", a / b}')
    added=$(awk -v a="$p99" -v b="$DIRECT_P99" 'BEGIN{printf "%+.0f µs", a - b}')
    [ "$t" = origin-direct ] && ratio="-" && added="-"
    printf '| %-20s | %8s | %7s | %7s | %11s | %10s | %15s | %s |\n' "$t" "$(median "${R_RPS[$t]}")" "$(median "${R_P50[$t]}")" "$p99" "$cpu" "$ratio" "$added" "${T_NOTE[$t]}"
  done
  echo
  echo "CPU ratio = nginx's CPU µs/request ÷ the target's (higher is cheaper; nginx = 1.00). Per-round CPU µs/req:"
  for t in "${TARGETS[@]}"; do printf '  %-20s %s\n' "$t" "${R_CPU[$t]}"; done
  if [ "$PACED" != 0 ]; then
    echo
    echo "Latency at a paced load (each of $CONNECTIONS connections waits ${PACED} ms between requests), medians:"
    echo
    printf '| %-20s | %8s | %7s | %7s | %13s | %13s |\n' target "req/s" "p50 µs" "p99 µs" "p50 vs direct" "p99 vs direct"
    printf '|%s|%s|%s|%s|%s|%s|\n' "-----------------------" ---------: --------: --------: --------------: --------------:
    PD50=$(median "${P_P50[origin-direct]}"); PD99=$(median "${P_P99[origin-direct]}")
    for t in "${TARGETS[@]}"; do
      p50=$(median "${P_P50[$t]}"); p99=$(median "${P_P99[$t]}")
      printf '| %-20s | %8s | %7s | %7s | %13s | %13s |\n' "$t" "$(median "${P_RPS[$t]}")" "$p50" "$p99" \
        "$(awk -v a="$p50" -v b="$PD50" 'BEGIN{printf "%+.0f µs", a - b}')" "$(awk -v a="$p99" -v b="$PD99" 'BEGIN{printf "%+.0f µs", a - b}')"
    done
    echo
  fi
  if [ "$TLS_PASS" = 1 ]; then
    echo
    echo "TLS (ECDSA P-256, rustls for Pingora and authgate, OpenSSL $(openssl version | awk '{print $2}') for nginx and HAProxy), medians; handshake shapes: a new connection per request, $HANDSHAKE_CLIENTS handshake.py clients at once:"
    echo
    printf '| %-16s | %10s | %10s | %10s | %10s | %10s | %8s | %8s | %8s | %9s | %s |\n' target "keep-alive CPU µs/req" "full req/s" "full CPU µs/req" "resumed req/s" "resumed CPU µs/req" "resumed %" "resumed ÷ full" "h2 req/s" "h2 CPU µs/req" note
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------------ ----------: ----------: ----------: ----------: ----------: ---------: ---------: ---------: ----------: ---
    for t in "${TLS_TARGETS[@]}"; do
      full=$(median "${H_FULL[$t]}"); res=$(median "${H_RES[$t]}")
      printf '| %-16s | %10s | %10s | %10s | %10s | %10s | %8s | %8s | %8s | %9s | %s |\n' "$t" "$(median "${R_CPU[$t-tls-ka]}")" \
        "$(median "${H_FULL_RPS[$t]}")" "$full" "$(median "${H_RES_RPS[$t]}")" "$res" "$(median "${H_RES_SHARE[$t]}")" \
        "$(awk -v a="$res" -v b="$full" 'BEGIN{printf "%.2f", b ? a / b : 0}')" "$(median "${H2_RPS[$t]}")" "$(median "${H2_CPU[$t]}")" "${TLS_NOTE[$t]}"
    done
    echo
    echo "TLS 1.2 (abbreviated resumption: no key exchange), medians:"
    echo
    printf '| %-16s | %10s | %10s | %8s | %8s |\n' target "full CPU µs/req" "resumed CPU µs/req" "resumed %" "resumed ÷ full"
    printf '|%s|%s|%s|%s|%s|\n' ------------------ ----------: ----------: ---------: ---------:
    for t in "${TLS_TARGETS[@]}"; do
      full=$(median "${H_FULL12[$t]}"); res=$(median "${H_RES12[$t]}")
      printf '| %-16s | %10s | %10s | %8s | %8s |\n' "$t" "$full" "$res" "$(median "${H_RES12_SHARE[$t]}")" \
        "$(awk -v a="$res" -v b="$full" 'BEGIN{printf "%.2f", b ? a / b : 0}')"
    done
    echo
    echo "Per-round CPU µs/req, full / resumed / TLS 1.2 full / TLS 1.2 resumed / h2:"
    for t in "${TLS_TARGETS[@]}"; do printf '  %-16s %s/ %s/ %s/ %s/ %s\n' "$t" "${H_FULL[$t]}" "${H_RES[$t]}" "${H_FULL12[$t]}" "${H_RES12[$t]}" "${H2_CPU[$t]}"; done
  fi
  if [ -n "${AG_ADMIN[cold]:-}" ]; then
    v=$(( $(verifications cold verified) - cold_before_verified )); c=$(( $(verifications cold cached) - cold_before_cached ))
    echo "authgate-cold: $v signature verifications, $c cache hits during the load ($(awk -v v="$v" -v c="$c" 'BEGIN{printf "%.1f", (v + c) ? 100 * v / (v + c) : 0}')% verified)"
  fi
  if [ -n "${T_PID[authgate-abac]:-}" ]; then
    i=$(( $(abac_checks main allowed idp) - abac_before_idp )); c=$(( $(abac_checks main allowed cache) - abac_before_cache ))
    echo "authgate-abac: $i live checks asked of the IdP, $c answered from authgate's decision cache during the load"
  fi
  if [ -n "${T_PID[authgate-apikey]:-}" ]; then
    echo "authgate-apikey: $(( $(key_exchanges main ok) - keys_before )) API-key exchanges at the IdP during the load (the key's token is cached)"
  fi
} | tee "$WORK/table.md"
[ -n "${RESULTS:-}" ] && cp "$WORK/table.md" "$RESULTS"
exit 0
