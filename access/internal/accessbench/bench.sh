#!/usr/bin/env bash
# Access benchmark: requests/s and p99 latency of an authenticated session
# through edgegw, straight to the upstream, and through oauth2-proxy
# configured alike (OIDC, PKCE S256, cookie sessions, HTTPS with the same
# certificate), all on loopback, in one run, rounds interleaved.
#
# Needs: wrk (Debian package), and oauth2-proxy built from the module proxy:
#   GOBIN=/tmp/o2p go install github.com/oauth2-proxy/oauth2-proxy/v7@v7.15.6
# Usage: access/internal/accessbench/bench.sh [rounds] [duration] [connections]
set -euo pipefail
ROUNDS=${1:-3}
DUR=${2:-10s}
CONNS=${3:-32}
O2P=${O2P:-$(command -v oauth2-proxy || echo /tmp/o2p/oauth2-proxy)}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

UP=127.0.0.1:18080 IDP=127.0.0.1:18081 EDGE=127.0.0.1:18443 O2PADDR=127.0.0.1:18444
go build -o "$WORK/accessbench" "$ROOT/access/internal/accessbench"
B="$WORK/accessbench"

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; exit 1; }

"$B" upstream -listen $UP & PIDS+=($!)
"$B" idp -listen $IDP -client "edgegw=https://wiki.test:${EDGE#*:}/cdn-cgi/access/callback" \
  -client "o2p=https://$O2PADDR/oauth2/callback" & PIDS+=($!)
wait_port $UP; wait_port $IDP
mkdir -p "$WORK/state"
"$B" edgegw -listen $EDGE -upstream http://$UP -issuer http://$IDP -state "$WORK/state" & PIDS+=($!)
wait_port $EDGE

HAVE_O2P=0
if [ -x "$O2P" ]; then
  HAVE_O2P=1
  "$O2P" --provider=oidc --oidc-issuer-url=http://$IDP --client-id=o2p --client-secret=secret \
    --code-challenge-method=S256 --cookie-secret=0123456789abcdef0123456789abcdef \
    --email-domain=zitadel.ch --allowed-group=engineering --oidc-groups-claim=groups \
    --upstream=http://$UP --https-address=$O2PADDR --http-address="" \
    --tls-cert-file="$WORK/state/access/selfsigned.crt" --tls-key-file="$WORK/state/access/selfsigned.key" \
    --redirect-url=https://$O2PADDR/oauth2/callback --skip-provider-button --cookie-secure=true \
    --request-logging=false --auth-logging=false --standard-logging=false >"$WORK/o2p.log" 2>&1 & PIDS+=($!)
  wait_port $O2PADDR
fi

EDGE_COOKIE=$("$B" login -start "https://wiki.test:${EDGE#*:}/" -dial $EDGE -cookie EDGEGW_Authorization)
[ $HAVE_O2P = 1 ] && O2P_COOKIE=$("$B" login -start "https://$O2PADDR/" -cookie _oauth2_proxy)

run() { # name url extra-header...
  local name=$1 url=$2; shift 2
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  local out; out=$(wrk -t2 -c"$CONNS" -d"$DUR" --latency "${args[@]}" "$url")
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  printf '%s\t%s\t%s\n' "$name" "$rps" "$p99" | tee -a "$WORK/results"
}

echo "round	target	req/s	p99" >&2
for r in $(seq "$ROUNDS"); do
  echo "-- round $r (load before: $(cut -d' ' -f1 /proc/loadavg))" >&2
  run direct "http://$UP/"
  run edgegw "https://$EDGE/" "Host: wiki.test" "Cookie: $EDGE_COOKIE"
  [ $HAVE_O2P = 1 ] && run oauth2-proxy "https://$O2PADDR/" "Cookie: $O2P_COOKIE"
done
echo "== medians over $ROUNDS rounds ($DUR, $CONNS connections, wrk -t2)"
for t in direct edgegw oauth2-proxy; do
  grep -P "^$t\t" "$WORK/results" >/dev/null 2>&1 || continue
  rps=$(grep -P "^$t\t" "$WORK/results" | cut -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  p99=$(grep -P "^$t\t" "$WORK/results" | cut -f3 | tr '\n' ' ')
  printf '%-13s %10s req/s   p99 per round: %s\n' "$t" "$rps" "$p99"
done
