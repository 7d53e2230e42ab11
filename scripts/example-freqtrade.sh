#!/usr/bin/env bash
# slotpack with real third-party tenants: 10 FreqTrade bots (PyPI
# `freqtrade webserver`, dry run, offline) in one pool of the docker backend,
# from one spec, with no wrapper script. Shows and measures:
#   1. 10 FreqTrade containers of the same image, one per bot (the legacy
#      way): their memory (cgroup), then removed;
#   2. 10 bots created through the API in one pool of class `freqtrade`:
#      the time until all 10 answer their ping, the pool's memory (cgroup);
#   3. an authenticated FreqTrade route (show_config, basic auth) through the
#      slotpack proxy (slotpack's token in X-Slotpack-Token);
#   4. `docker kill` of the pool: the time until all 10 answer again.
# Usage: bash scripts/example-freqtrade.sh   (root or docker group; ~5 min
# the first time, most of it building the FreqTrade image)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure.sh
ensure_rust
ensure_cmd curl curl
ensure_cmd jq jq

N=${BOTS:-10}
DEP=ft-example
BASE=19000            # slot ports 19000.., agent port 18999
API=127.0.0.1:18088
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
IMAGE=${FREQTRADE_IMAGE:-slotpack-example/freqtrade:${FREQTRADE_VERSION:-2026.9}}

echo "== images and binaries"
bash scripts/build-images.sh
bash scripts/build-freqtrade-image.sh "$IMAGE"
cargo build --release --locked --quiet --bin slotpack

work=$(mktemp -d /tmp/slotpack-ft.XXXXXX)
serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  for id in $(docker ps -aq --filter label=managed-by=slotpack --filter "label=slotpack.deployment=$DEP"); do
    docker rm -f -v "$id" >/dev/null
  done
  for v in $(docker volume ls -q --filter label=managed-by=slotpack --filter "label=slotpack.deployment=$DEP"); do
    docker volume rm -f "$v" >/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# Memory of containers, as scripts/bench-memory.sh counts it: cgroup usage
# minus inactive page cache, plus the RSS of their containerd shims; prints
# "cgroup_bytes shim_bytes" summed over the given containers.
memory_of() {
  local ids
  ids=$(docker inspect -f '{{.Id}}' "$@" | tr '\n' ' ')
  python3 - $ids <<'PY'
import sys
sys.path.insert(0, "scripts/bench")
import memory
ids = sys.argv[1:]
print(sum(memory.cgroup_bytes(c) for c in ids), sum(memory.shim_bytes(c) for c in ids))
PY
}
pong() { curl -s -m 2 "$1" | grep -q pong; }

# One bot's FreqTrade settings as environment variables (FreqTrade reads
# FREQTRADE__SECTION__KEY); the same for a legacy container and a spec.
PASSWORD_OF() { echo "pw-$1"; }

echo "== 1. $N FreqTrade containers, one per bot (the legacy way)"
t0=$(now)
for i in $(seq 1 "$N"); do
  docker run -d --name "$DEP-legacy-$i" --label managed-by=slotpack --label "slotpack.deployment=$DEP" \
    -e FREQTRADE__API_SERVER__LISTEN_PORT=8080 -e FREQTRADE__API_SERVER__USERNAME=freqtrader \
    -e "FREQTRADE__API_SERVER__PASSWORD=$(PASSWORD_OF "legacy-$i")" \
    -e "FREQTRADE__API_SERVER__JWT_SECRET_KEY=jwt-secret-of-legacy-$i-0123456789abcdef" \
    -p 127.0.0.1::8080 "$IMAGE" >/dev/null
done
for i in $(seq 1 "$N"); do
  addr=$(docker port "$DEP-legacy-$i" 8080/tcp | head -1)
  until pong "http://$addr/api/v1/ping"; do sleep 0.2; done
done
legacy_ready=$(since "$t0")
sleep 5   # let them settle after start-up
read -r legacy_cg legacy_shim < <(memory_of $(seq -f "$DEP-legacy-%g" 1 "$N"))
echo "   all $N answer ping ${legacy_ready} s after the first docker run; memory: $(( (legacy_cg + legacy_shim) >> 20 )) MiB (cgroups $((legacy_cg >> 20)) + shims $((legacy_shim >> 20)))"
for i in $(seq 1 "$N"); do docker rm -f -v "$DEP-legacy-$i" >/dev/null; done

echo "== 2. $N bots in one pool of class freqtrade, from one spec"
cat > "$work/slotpack.toml" <<EOF
[classes.freqtrade]
image = "$IMAGE"
slots = $N
memory = "$((N * 448 + 64))m"
cpus = "2"
EOF
SLOTPACK_BACKEND=docker SLOTPACK_DEPLOYMENT=$DEP SLOTPACK_ADMIN_TOKEN=$TOKEN \
  SLOTPACK_LISTEN=$API SLOTPACK_DATA_DIR=$work/data POOL_BASE_PORT=$BASE \
  MAX_BOTS_PER_CONTAINER=$N HEALTH_CHECK_INTERVAL=5000 \
  target/release/slotpack serve --config "$work/slotpack.toml" 2>"$work/serve.log" &
serve_pid=$!
until curl -s "http://$API/healthz" >/dev/null; do sleep 0.1; done
A="Authorization: Bearer $TOKEN"
spec() {
  jq -n --arg id "$1" '{
    id: $id, poolClass: "freqtrade",
    command: "freqtrade",
    args: ["webserver", "--config", "/etc/freqtrade/config.json", "--userdir", "${HOME}"],
    env: {
      FREQTRADE__API_SERVER__LISTEN_IP_ADDRESS: "${HOST}",
      FREQTRADE__API_SERVER__LISTEN_PORT: "${PORT}",
      FREQTRADE__API_SERVER__USERNAME: "freqtrader",
      FREQTRADE__API_SERVER__PASSWORD: "pw-${TENANT_ID}",
      FREQTRADE__API_SERVER__JWT_SECRET_KEY: "jwt-secret-of-${TENANT_ID}-0123456789abcdef"
    },
    resources: {memoryMb: 448, cpuMillis: 200},
    ping: {kind: "http", path: "/api/v1/ping", intervalMs: 5000, timeoutMs: 3000, failureThreshold: 3,
           initialDelayMs: 180000},
    stop: {signal: "TERM", timeoutMs: 15000}
  }'
}
t0=$(now)
for i in $(seq 1 "$N"); do
  code=$(curl -s -o "$work/create.json" -w '%{http_code}' -H "$A" -X POST "http://$API/api/tenants" -d "$(spec "ft-$i")")
  [ "$code" = 201 ] || { echo "create ft-$i: $code $(cat "$work/create.json")"; exit 1; }
done
created=$(since "$t0")
all_pong() {
  for i in $(seq 1 "$N"); do
    pong "http://127.0.0.1:$((BASE + i - 1))/api/v1/ping" || return 1
  done
}
until all_pong; do sleep 0.2; done
pool_ready=$(since "$t0")
pool=$(curl -s -H "$A" "http://$API/api/pool/status" | jq -r '.pools[0].containerName')
echo "   $N creates answered in ${created} s; all $N answer ping ${pool_ready} s after the first create (pool $pool)"
sleep 5
read -r pool_cg pool_shim < <(memory_of "$pool")
echo "   memory of the pool: $(( (pool_cg + pool_shim) >> 20 )) MiB (cgroup $((pool_cg >> 20)) + shim $((pool_shim >> 20))); orchestrator RSS $(( $(awk '/VmRSS/ {print $2}' /proc/$serve_pid/status) >> 10 )) MiB"

echo "== 3. FreqTrade's own login through the slotpack proxy"
url="http://$API/api/tenants/ft-1/proxy/api/v1/show_config"
no_auth=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Slotpack-Token: $TOKEN" "$url")
code=$(curl -s -o "$work/show.json" -w '%{http_code}' -H "X-Slotpack-Token: $TOKEN" -u freqtrader:pw-ft-1 "$url")
echo "   show_config without FreqTrade's login: $no_auth; with it: $code ($(jq -c '{version, bot_name, dry_run}' "$work/show.json" 2>/dev/null || true))"
[ "$code" = 200 ] && [ "$no_auth" = 401 ] || { echo "unexpected answers"; exit 1; }
wrong=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Slotpack-Token: $TOKEN" -u freqtrader:pw-ft-2 "$url")
echo "   ft-2's password on ft-1: $wrong"

echo "== 4. docker kill of the pool"
docker kill "$pool" >/dev/null
t0=$(now)
sleep 0.5
until all_pong; do sleep 0.2; done
back=$(since "$t0")
echo "   all $N answer ping again ${back} s after docker kill"

echo
echo "== figures ($N FreqTrade $(docker run --rm --entrypoint /opt/freqtrade/bin/freqtrade "$IMAGE" --version 2>/dev/null | tail -1) bots, $(nproc) CPUs)"
echo "   time to all healthy:   pool ${pool_ready} s   (separate containers: ${legacy_ready} s after docker run)"
echo "   memory:                pool $(( (pool_cg + pool_shim) >> 20 )) MiB   separate containers $(( (legacy_cg + legacy_shim) >> 20 )) MiB"
echo "   back after docker kill: ${back} s"
