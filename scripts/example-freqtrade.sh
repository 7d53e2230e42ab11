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
# Then the data round (issue K), in a deployment of its own: a bot's trade
# database, made by FreqTrade itself (`freqtrade show-trades` runs its
# init_db) in the bot's HOME and marked with a row of ours, is checked
# (the same file, FreqTrade's tables, our marker rows, also as the bot
# itself reads it at its next start) after
#   5. consolidation (2-slot class, two sparse pools: one empties into the
#      other), against a plain restart; the bot has 100 MiB more in its home;
#   6. a PUT /api/tenants/{id} that changes its config (bot name and
#      max_open_trades, as FreqTrade's show_config tells);
#   7. a class image roll (PUT /api/pool/classes/{name}, the image tagged
#      anew);
#   8. `slotpack migrate --execute` of 3 legacy FreqTrade containers with
#      user_data bind mounts (one with 100 MiB more), then a write while
#      pooled and `slotpack migrate --rollback`: the write is in the legacy
#      bind folder.
# Each check prints PASS or FAIL; the script fails if one did.
# Usage: bash scripts/example-freqtrade.sh   (root or docker group; ~5 min
# the first time, most of it building the FreqTrade image, and ~5 min more for
# the data round)
#   DATA_ROUND_ONLY=1: the data round only;  DATA_ROUND=0: steps 1-4 only.
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
UID_BASE=${SLOT_UID_BASE:-610000}   # slot uids of its own (serve refuses uids another deployment holds)
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
IMAGE=${FREQTRADE_IMAGE:-slotpack-example/freqtrade:${FREQTRADE_VERSION:-2026.9}}

echo "== images and binaries"
docker image inspect "${SLOTPACK_POOL_IMAGE:-slotpack/pool:latest}" >/dev/null 2>&1 && [ "${DATA_ROUND_ONLY:-0}" = 1 ] ||
  bash scripts/build-images.sh pool
bash scripts/build-freqtrade-image.sh "$IMAGE"
cargo build --release --locked --quiet --bin slotpack
FT_VERSION=$(docker run --rm --label managed-by=slotpack --entrypoint /opt/freqtrade/bin/freqtrade "$IMAGE" --version 2>/dev/null | tail -1 | awk '{print $NF}')

work=$(mktemp -d /tmp/slotpack-ft.XXXXXX)
# A copy of the binary: a build meanwhile does not change it under this run.
SLOTPACK=$work/slotpack
cp target/release/slotpack "$SLOTPACK"
serve_pid=
stop_serve() {
  if [ -n "$serve_pid" ]; then
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
  fi
}
# Usage: remove_deployment NAME: the containers and volumes of this
# script's deployment NAME (by their labels).
remove_deployment() {
  local id v
  for id in $(docker ps -aq --filter label=managed-by=slotpack --filter "label=slotpack.deployment=$1"); do
    docker rm -f -v "$id" >/dev/null
  done
  for v in $(docker volume ls -q --filter label=managed-by=slotpack --filter "label=slotpack.deployment=$1"); do
    docker volume rm -f "$v" >/dev/null
  done
}
DDEP=ft-example-data  # the data round's deployment
ROLL_IMAGE=${IMAGE}-roll
made_roll_tag=
cleanup() {
  local id
  stop_serve
  remove_deployment "$DEP"
  remove_deployment "$DDEP"
  # The data round's legacy containers (also as a rollback made them again).
  for id in $(docker ps -aq --filter label=managed-by=slotpack --filter "label=slotpack.example=$DDEP"); do
    docker rm -f -v "$id" >/dev/null
  done
  rm -rf "$work"
  if [ -n "$made_roll_tag" ]; then docker rmi "$ROLL_IMAGE" >/dev/null 2>&1 || true; fi
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

if [ "${DATA_ROUND_ONLY:-0}" != 1 ]; then
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
    MAX_BOTS_PER_CONTAINER=$N HEALTH_CHECK_INTERVAL=5000 SLOT_UID_BASE=$UID_BASE \
    "$SLOTPACK" serve --config "$work/slotpack.toml" 2>"$work/serve.log" &
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
  echo "== figures ($N FreqTrade $FT_VERSION bots, $(nproc) CPUs)"
  echo "   time to all healthy:   pool ${pool_ready} s   (separate containers: ${legacy_ready} s after docker run)"
  echo "   memory:                pool $(( (pool_cg + pool_shim) >> 20 )) MiB   separate containers $(( (legacy_cg + legacy_shim) >> 20 )) MiB"
  echo "   back after docker kill: ${back} s"

  # The data round has a deployment of its own: end this one first (its
  # ten bots would take the CPUs the data round's bots start on).
  stop_serve
  remove_deployment "$DEP"
fi

[ "${DATA_ROUND:-1}" = 0 ] && exit 0

# ---------------------------------------------------------------- data round
# A deployment of its own, consolidation on; class ftdata (2-slot pools)
# for steps 5-7, class ftmig (3-slot pools) for the migrated bots.
DAPI=127.0.0.1:18089
DBASE=19200           # slot ports 19200.., agent ports below
DUID_BASE=${DATA_SLOT_UID_BASE:-620000}
WAIT=${DATA_WAIT:-600}   # seconds any one wait may take (2 busy CPUs, slow starters)
# The bots' ping.initialDelayMs. The agent sends a program's first ping only
# after it (it does not ping during it), so a bot is `healthy` that long
# after each start, however soon it answers; and a roll waits for healthy
# tenants: with steps 2-4's 180 s every roll would take 3 minutes (and fail
# at the default SLOTPACK_ROLL_TIMEOUT_MS of 60 s). Two or three FreqTrade
# bots starting at once here answer within about 15 s.
PING_DELAY_MS=${DATA_PING_DELAY_MS:-30000}
FTDB=scripts/bench/ft_db.py
fails=0
pass() { echo "   PASS $*"; }
fail() { echo "   FAIL $*"; fails=$((fails + 1)); }
# Usage: check WHAT COMMAND...: PASS or FAIL, as COMMAND says.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
all() { local _cond; for _cond in "$@"; do eval "$_cond" || return 1; done; }   # all 'COND' 'COND'...
# Usage: wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds (every
# 0.3 s); false, saying so, after SECONDS.
wait_for() {
  local end=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    if [ "$SECONDS" -ge "$end" ]; then echo "   (gave up after $1 s: $what)"; return 1; fi
    sleep 0.3
  done
}
dapi() { local m=$1 p=$2; shift 2; curl -s -m 60 -H "Authorization: Bearer $TOKEN" -X "$m" "http://$DAPI$p" "$@" || true; }
tenant_field() { dapi GET "/api/tenants/$1" | jq -r "$2 // empty" 2>/dev/null || true; }
started_at() { tenant_field "$1" .tenant.startedAt; }
pool_of() { tenant_field "$1" .tenant.placement.containerName; }
# Through the proxy: its route stays when a move changes the bot's port.
dpong() { curl -s -m 3 -H "X-Slotpack-Token: $TOKEN" "http://$DAPI/api/tenants/$1/proxy/api/v1/ping" 2>/dev/null | grep -q pong; }
all_dpong() { local id; for id in "$@"; do dpong "$id" || return 1; done; }
# Usage: new_run ID STARTED_AT: ID was started again since STARTED_AT, and answers.
new_run() {
  local s
  s=$(started_at "$1")
  [ -n "$s" ] && [ "$s" != "$2" ] && dpong "$1"
}
show_config() {
  curl -s -m 5 -H "X-Slotpack-Token: $TOKEN" -u "freqtrader:pw-$1" \
    "http://$DAPI/api/tenants/$1/proxy/api/v1/show_config" 2>/dev/null || true
}
last_seq() { dapi GET "/api/events?limit=1" | jq -r '.events[-1].seq // 0'; }
# Usage: events_since SEQ KIND: the events of KIND after SEQ, one JSON a line.
events_since() {
  dapi GET "/api/events?limit=1000" |
    jq -c --argjson s "$1" --arg k "$2" '.events[] | select(.seq > $s and .kind == $k)' 2>/dev/null || true
}
has_event() { [ -n "$(events_since "$1" "$2")" ]; }
show_events() { jq -r '"   event: \(.at) \(.kind) \(.tenant // .pool): \(.detail)"'; }
epoch_of() { date -d "$1" +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
since_ms() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
# ft_db.py (scripts/bench) run by the FreqTrade image's Python in a container.
db_in() { local c=$1; shift; docker exec -i "$c" /opt/freqtrade/bin/python - "$@" <"$FTDB"; }
home_db() { echo "/tenants/$1/home/tradesv3.sqlite"; }
vol_db() { echo "/tenants/$1/volumes/freqtrade%2Fuser_data/tradesv3.sqlite"; }
# Usage: db_is JSON INODE NOTE...: FreqTrade's tables are there, our marker
# rows are exactly NOTE..., and (INODE not empty) it is that very file.
db_is() {
  local j=$1 ino=$2
  shift 2
  jq -e --arg ino "$ino" '(.tables | index("trades") and index("orders") and index("pairlocks"))
      and .markers == $ARGS.positional and ($ino == "" or (.inode | tostring) == $ino)' --args "$@" <<<"$j" >/dev/null 2>&1
}
brief() { jq -c '{inode, tables: (.tables | length), trades, markers}' <<<"$1" 2>/dev/null || echo "$1"; }
# What the bot's last start read from its database (the start line below
# prints it before `exec freqtrade webserver`), from its log.
seen_by_bot() { dapi GET "/api/tenants/$1/logs?tail=1000" | sed -n 's/.*ft-db //p' | tail -1; }
seen_by_legacy() { docker logs "$1" 2>&1 | sed -n 's/.*ft-db //p' | tail -1; }
# Usage: seen_is JSON DB NOTE...: the bot read DB, with FreqTrade's tables, and markers NOTE....
seen_is() {
  local j=$1 db=$2
  shift 2
  jq -e --arg db "$db" '.db == $db and (.tables | index("trades")) and .markers == $ARGS.positional' --args "$@" <<<"$j" >/dev/null 2>&1
}
sum_in() { docker exec "$1" md5sum "$2" 2>/dev/null | cut -d' ' -f1; }

# A bot's start, one command line: FreqTrade makes its trade database
# (show-trades runs its init_db, which creates the tables), the bot prints
# what it finds in it (its path, tables, our marker rows) as "ft-db {json}",
# then `exec freqtrade webserver`. No `$` but the agent's ${HOME} (expanded
# at spawn), so `slotpack migrate` takes the legacy one as it is.
# Usage: ft_start USERDIR
ft_start() {
  local py='import json,sqlite3,sys;p=sys.argv[1];c=sqlite3.connect("file:"+p+"?mode=rw",uri=True);t=sorted(r[0] for r in c.execute("select name from sqlite_master where type=?",("table",)));m=[r[0] for r in c.execute("select note from slotpack_marker order by rowid")] if "slotpack_marker" in t else [];c.close();print("ft-db",json.dumps({"db":p,"tables":t,"markers":m}),flush=True)'
  echo "freqtrade show-trades --config /etc/freqtrade/config.json --userdir $1 --db-url sqlite:///$1/tradesv3.sqlite >/dev/null 2>&1; python -c '$py' $1/tradesv3.sqlite; exec freqtrade webserver --config /etc/freqtrade/config.json --userdir $1"
}
# Usage: dspec ID BOT_NAME [MAX_OPEN_TRADES]: a bot of steps 5-7.
dspec() {
  jq -n --arg id "$1" --arg name "$2" --arg mot "${3:-1}" --arg start "$(ft_start '${HOME}')" \
    --argjson delay "$PING_DELAY_MS" '{
    id: $id, poolClass: "ftdata",
    command: "/bin/sh", args: ["-c", $start],
    env: {
      FREQTRADE__BOT_NAME: $name,
      FREQTRADE__MAX_OPEN_TRADES: $mot,
      FREQTRADE__API_SERVER__LISTEN_IP_ADDRESS: "${HOST}",
      FREQTRADE__API_SERVER__LISTEN_PORT: "${PORT}",
      FREQTRADE__API_SERVER__USERNAME: "freqtrader",
      FREQTRADE__API_SERVER__PASSWORD: "pw-${TENANT_ID}",
      FREQTRADE__API_SERVER__JWT_SECRET_KEY: "jwt-secret-of-${TENANT_ID}-0123456789abcdef"
    },
    resources: {memoryMb: 448, cpuMillis: 200},
    ping: {kind: "http", path: "/api/v1/ping", intervalMs: 5000, timeoutMs: 3000, failureThreshold: 3,
           initialDelayMs: $delay},
    stop: {signal: "TERM", timeoutMs: 15000}
  }'
}
class_body() {
  jq -n --arg image "$1" --argjson slots "$2" '{image: $image, slots: $slots, memoryMb: ($slots * 448 + 64), cpuMillis: 2000}'
}
pool_count() { docker ps -q --filter "label=slotpack.deployment=$DDEP" --filter label=slotpack.pool | wc -l; }

echo
echo "== data round: deployment $DDEP, FreqTrade $FT_VERSION, SLOTPACK_CONSOLIDATE=true"
mkdir -p "$work/ddata"
SLOTPACK_BACKEND=docker SLOTPACK_DEPLOYMENT=$DDEP SLOTPACK_ADMIN_TOKEN=$TOKEN \
  SLOTPACK_LISTEN=$DAPI SLOTPACK_DATA_DIR=$work/ddata POOL_BASE_PORT=$DBASE SLOT_UID_BASE=$DUID_BASE \
  MAX_BOTS_PER_CONTAINER=3 HEALTH_CHECK_INTERVAL=5000 SLOTPACK_CONSOLIDATE=true \
  SLOTPACK_ROLL_TIMEOUT_MS=$((WAIT * 1000)) \
  "$SLOTPACK" serve 2>"$work/dserve.log" &
serve_pid=$!
wait_for 60 "the orchestrator answers" curl -sf -o /dev/null "http://$DAPI/healthz" ||
  { echo "serve did not start:"; cat "$work/dserve.log"; exit 1; }
for c in "ftdata 2" "ftmig 3"; do
  set -- $c
  code=$(dapi PUT "/api/pool/classes/$1" -o "$work/class.json" -w '%{http_code}' -d "$(class_body "$IMAGE" "$2")")
  case "$code" in 200 | 201) ;; *) echo "class $1: $code $(cat "$work/class.json")"; exit 1 ;; esac
done
declare -A INODE SUM STARTED

echo "== 5. consolidation: 3 bots in 2-slot pools, one deleted, the two sparse pools become one"
t0=$(now)
for id in dt-1 dt-2 dt-3; do
  code=$(dapi POST /api/tenants -o "$work/create.json" -w '%{http_code}' -d "$(dspec "$id" "$id")")
  [ "$code" = 201 ] || { echo "create $id: $code $(cat "$work/create.json")"; exit 1; }
done
wait_for "$WAIT" "dt-1..3 answer" all_dpong dt-1 dt-2 dt-3 || { fail "dt-1..3 answer"; exit 1; }
first_ready=$(since "$t0")
echo "   dt-1..3 answer ${first_ready} s after the first create; $(for id in dt-1 dt-2 dt-3; do printf '%s in %s; ' "$id" "$(pool_of "$id")"; done)"
for id in dt-1 dt-2 dt-3; do
  j=$(db_in "$(pool_of "$id")" check "$(home_db "$id")")
  check "$id: FreqTrade made its trade DB $(home_db "$id"): $(brief "$j")" db_is "$j" ""
done
# Our marker row, and 100 MiB more, in the homes of the two that stay.
for id in dt-1 dt-3; do
  c=$(pool_of "$id")
  j=$(db_in "$c" mark "$(home_db "$id")" "made-$id")
  INODE[$id]=$(jq -r .inode <<<"$j")
  f=/tenants/$id/home/ballast.bin
  docker exec "$c" sh -c "head -c 104857600 /dev/urandom >$f && chown \$(stat -c %u:%g /tenants/$id/home) $f && chmod 600 $f"
  SUM[$id]=$(sum_in "$c" "$f")
  STARTED[$id]=$(started_at "$id")
  echo "   $id: marker row made-$id written, 100 MiB file added: $(brief "$j")"
done
pools_before=$(pool_count)
seq0=$(last_seq)
t_del=$(now)
code=$(dapi DELETE /api/tenants/dt-2 -o /dev/null -w '%{http_code}')
check "DELETE dt-2 answered $code: two pools of one bot each" [ "$code" = 200 ]
wait_for "$WAIT" "a tenant.moved event" has_event "$seq0" tenant.moved || true
moved_ev=$(events_since "$seq0" tenant.moved | head -1)
moved=$(jq -r '.tenant // empty' <<<"$moved_ev" 2>/dev/null || true)
if [ -z "$moved" ]; then
  fail "consolidation moved no bot within ${WAIT} s"
else
  show_events <<<"$moved_ev"
  stayed=dt-1
  [ "$moved" = dt-1 ] && stayed=dt-3
  if wait_for "$WAIT" "$moved answers again" new_run "$moved" "${STARTED[$moved]}"; then
    t_back=$(now)
    move_total=$(secs "$t_del" "$t_back")
    move_s=$(secs "$(epoch_of "$(jq -r .at <<<"$moved_ev")")" "$t_back")
    pass "$moved answers in its new slot ${move_s} s after the move's event (${move_total} s after the DELETE)"
  else
    fail "$moved does not answer in its new slot"
  fi
  pools_after=$(pool_count)
  check "pool containers: $pools_before before, $pools_after after; dt-1 in $(pool_of dt-1), dt-3 in $(pool_of dt-3)" \
    all '[ "$pools_before" = 2 ]' '[ "$pools_after" = 1 ]' '[ "$(pool_of dt-1)" = "$(pool_of dt-3)" ]'
  for id in "$moved" "$stayed"; do
    c=$(pool_of "$id")
    j=$(db_in "$c" check "$(home_db "$id")")
    check "$id's trade DB after the move: the same file (inode ${INODE[$id]}), FreqTrade's tables, marker: $(brief "$j")" \
      db_is "$j" "${INODE[$id]}" "made-$id"
    check "$id's 100 MiB file unchanged (md5 ${SUM[$id]})" [ "$(sum_in "$c" "/tenants/$id/home/ballast.bin")" = "${SUM[$id]}" ]
  done
  seen=$(seen_by_bot "$moved")
  check "$moved, at its start in the new slot, read: $seen" seen_is "$seen" "/tenants/$moved/home/tradesv3.sqlite" "made-$moved"
  # The same bot, a plain restart in its slot: what a move should not exceed.
  s0=$(started_at "$moved")
  t0=$(now)
  code=$(dapi POST "/api/tenants/$moved/restart" -o /dev/null -w '%{http_code}')
  if [ "$code" = 200 ] && wait_for "$WAIT" "$moved restarts" new_run "$moved" "$s0"; then
    restart_s=$(since "$t0")
    pass "$moved (the same 100 MiB home) after POST /restart in its slot: answers again in ${restart_s} s"
  else
    fail "restart of $moved: $code"
  fi
  j=$(db_in "$(pool_of "$moved")" check "$(home_db "$moved")")
  check "$moved's trade DB after the restart: $(brief "$j")" db_is "$j" "${INODE[$moved]}" "made-$moved"
fi
bot=${moved:-dt-1}   # the bot of steps 6 and 7

echo "== 6. PUT /api/tenants/$bot with a new config (bot_name $bot-put, max_open_trades 3)"
cfg() { show_config "$1" | jq -c '{bot_name, max_open_trades}' 2>/dev/null || true; }
before=$(cfg "$bot")
s0=$(started_at "$bot")
put_done() { new_run "$bot" "$s0" && [ "$(cfg "$bot")" = "{\"bot_name\":\"$bot-put\",\"max_open_trades\":3}" ]; }
t0=$(now)
code=$(dapi PUT "/api/tenants/$bot" -o "$work/put.json" -w '%{http_code}' -d "$(dspec "$bot" "$bot-put" 3)")
put_answer=$(since_ms "$t0")
check "PUT answered $code in ${put_answer} ms: $(jq -c '.tenant | {state, pool: .placement.containerName, slot: .placement.slot}' "$work/put.json" 2>/dev/null)" [ "$code" = 200 ]
if wait_for "$WAIT" "$bot answers with its new config" put_done; then
  put_s=$(since "$t0")
  pass "$bot answers with its new config ${put_s} s after the PUT: show_config $before -> $(cfg "$bot")"
else
  fail "$bot does not answer with its new config: show_config $(cfg "$bot")"
fi
j=$(db_in "$(pool_of "$bot")" check "$(home_db "$bot")")
check "$bot's trade DB after the PUT: the same file, FreqTrade's tables, marker: $(brief "$j")" db_is "$j" "${INODE[$bot]}" "made-$bot"
seen=$(seen_by_bot "$bot")
check "$bot, at its start with the new spec, read: $seen" seen_is "$seen" "/tenants/$bot/home/tradesv3.sqlite" "made-$bot"

echo "== 7. class image roll: PUT /api/pool/classes/ftdata with image $ROLL_IMAGE (docker tag of $IMAGE)"
if ! docker image inspect "$ROLL_IMAGE" >/dev/null 2>&1; then
  docker tag "$IMAGE" "$ROLL_IMAGE"
  made_roll_tag=1
fi
for id in dt-1 dt-3; do STARTED[$id]=$(started_at "$id"); done
rpool=$(pool_of "$bot")
old_cid=$(docker inspect -f '{{.Id}}' "$rpool")
seq0=$(last_seq)
t0=$(now)
code=$(dapi PUT /api/pool/classes/ftdata -o "$work/class.json" -w '%{http_code}' -d "$(class_body "$ROLL_IMAGE" 2)")
check "PUT /api/pool/classes/ftdata answered $code" all '[ "$code" = 200 ] || [ "$code" = 201 ]'
declare -A BACK
# Until the roll is over and both bots run again; notes when each happened.
roll_watch() {
  local id
  for id in dt-1 dt-3; do
    [ -z "${BACK[$id]:-}" ] && new_run "$id" "${STARTED[$id]}" && BACK[$id]=$(since "$t0")
  done
  [ -z "${roll_s:-}" ] && { has_event "$seq0" roll.done || has_event "$seq0" roll.failed; } && roll_s=$(since "$t0")
  [ -n "${roll_s:-}" ] && [ -n "${BACK[dt-1]:-}" ] && [ -n "${BACK[dt-3]:-}" ]
}
wait_for "$WAIT" "the roll and both bots" roll_watch || true
for k in roll.started roll.done roll.failed; do events_since "$seq0" "$k" | show_events; done
if [ -n "${roll_s:-}" ]; then
  check "the roll is done ${roll_s} s after the PUT" has_event "$seq0" roll.done
else
  fail "no roll.done within ${WAIT} s: roll $(dapi GET /api/pool/classes | jq -c '.classes[]? | select(.name == "ftdata") | .roll')"
fi
check "dt-1 and dt-3 answer on the new image ${BACK[dt-1]:-?} s and ${BACK[dt-3]:-?} s after the PUT" \
  all '[ -n "${BACK[dt-1]:-}" ]' '[ -n "${BACK[dt-3]:-}" ]'
rimage=$(docker inspect -f '{{.Config.Image}}' "$(pool_of "$bot")" 2>/dev/null || true)
new_cid=$(docker inspect -f '{{.Id}}' "$(pool_of "$bot")" 2>/dev/null || true)
check "pool $rpool made anew (container ${old_cid:0:12} -> ${new_cid:0:12}) on $rimage" \
  all '[ "$rimage" = "$ROLL_IMAGE" ]' '[ -n "$new_cid" ]' '[ "$new_cid" != "$old_cid" ]'
classes=$(dapi GET /api/pool/classes | jq -c '.classes[]? | select(.name == "ftdata") | {image, roll}')
check "GET /api/pool/classes: $classes" all '[ "$(jq -r .image <<<"$classes")" = "$ROLL_IMAGE" ]'
for id in dt-1 dt-3; do
  j=$(db_in "$(pool_of "$id")" check "$(home_db "$id")")
  check "$id's trade DB after the roll: the same file, FreqTrade's tables, marker: $(brief "$j")" db_is "$j" "${INODE[$id]}" "made-$id"
  seen=$(seen_by_bot "$id")
  check "$id, at its start on the new image, read: $seen" seen_is "$seen" "/tenants/$id/home/tradesv3.sqlite" "made-$id"
done
check "$bot keeps its PUT config on the new image: $(cfg "$bot")" \
  all '[ "$(cfg "$bot")" = "{\"bot_name\":\"$bot-put\",\"max_open_trades\":3}" ]'

echo "== 8. slotpack migrate: 3 legacy FreqTrade containers with user_data bind mounts"
migrate() {
  SLOTPACK_LISTEN=$DAPI SLOTPACK_ADMIN_TOKEN=$TOKEN SLOTPACK_DATA_DIR=$work/ddata \
    "$SLOTPACK" migrate --verify-timeout "$WAIT" "$@"
}
# Legacy containers are not of the deployment (its label slotpack.deployment
# marks pools); the label slotpack.example marks them for the cleanup.
legacy_start=$(ft_start /freqtrade/user_data)
t0=$(now)
for i in 1 2 3; do
  mkdir -p "$work/ud-$i"
  docker run -d --name "$DDEP-legacy-$i" --label managed-by=slotpack --label "slotpack.example=$DDEP" --label slotpack.legacy=true \
    --label slotpack.pool-class=ftmig --label slotpack.ping-path=/api/v1/ping \
    --memory 448m --cpus 0.5 -e PORT=8080 -e FREQTRADE__API_SERVER__LISTEN_PORT=8080 \
    -e "FREQTRADE__BOT_NAME=legacy-$i" -e FREQTRADE__API_SERVER__USERNAME=freqtrader \
    -e "FREQTRADE__API_SERVER__PASSWORD=pw-$DDEP-legacy-$i" \
    -e "FREQTRADE__API_SERVER__JWT_SECRET_KEY=jwt-secret-of-legacy-$i-0123456789abcdef" \
    -v "$work/ud-$i:/freqtrade/user_data" -p 127.0.0.1::8080 "$IMAGE" /bin/sh -c "$legacy_start" >/dev/null
done
legacy_up() {
  local i addr
  for i in 1 2 3; do
    addr=$(docker port "$DDEP-legacy-$i" 8080/tcp 2>/dev/null | head -1)
    [ -n "$addr" ] && pong "http://$addr/api/v1/ping" && [ -f "$work/ud-$i/tradesv3.sqlite" ] || return 1
  done
}
wait_for "$WAIT" "the legacy bots answer" legacy_up || fail "the 3 legacy bots answer"
echo "   the 3 legacy bots answer $(since "$t0") s after the first docker run"
for i in 1 2 3; do
  j=$(python3 "$FTDB" mark "$work/ud-$i/tradesv3.sqlite" "legacy-$i")
  check "$DDEP-legacy-$i: FreqTrade made its trade DB in the bind folder ud-$i; marker row legacy-$i written: $(brief "$j")" \
    db_is "$j" "" "legacy-$i"
done
head -c 104857600 /dev/urandom >"$work/ud-1/ballast.bin"
ud1_sum=$(md5sum "$work/ud-1/ballast.bin" | cut -d' ' -f1)
echo "   ud-1 has 100 MiB more (ballast.bin), ud-2 and ud-3 only FreqTrade's files"
# `slotpack migrate` takes every container of the engine labelled
# slotpack.legacy=true: go on only when the 3 above are the only ones.
others() {
  docker ps -a --filter label=slotpack.legacy=true --format '{{.Names}} {{.Label "slotpack.example"}}' |
    awk -v d="$DDEP" '$2 != d { print $1 }'
}
no_others() { [ -z "$(others)" ]; }
if ! wait_for "$WAIT" "no other slotpack.legacy=true containers on this engine" no_others; then
  fail "other legacy containers on this engine ($(others | tr '\n' ' ')): not migrating"
else
  migrate --dry-run >"$work/dry.txt" 2>&1 || true
  # (each tenant's line shortened: its command is the legacy one, as it is)
  sed 's/^/   | /' "$work/dry.txt" | cut -c1-180
  check "the dry run lists the 3 and each bind mount with its size" all \
    'grep -q "^3 legacy containers would be migrated" "$work/dry.txt"' \
    'for i in 1 2 3; do grep -qF "bind $work/ud-$i -> volume /freqtrade/user_data (" "$work/dry.txt" || return 1; done'
  t0=$(now)
  rc=0
  migrate --execute --verbose >"$work/migrate.txt" 2>&1 || rc=$?
  migrate_s=$(since "$t0")
  tr '\r' '\n' <"$work/migrate.txt" | sed 's/\x1b\[2K//g' | grep -v '^\[' | grep -v '^$' | sed 's/^/   | /'
  check "slotpack migrate --execute: rc $rc, ${migrate_s} s for the 3" [ "$rc" = 0 ]
  declare -A MIG_S
  for i in 1 2 3; do
    tid=$DDEP-legacy-$i
    ev=$(dapi GET "/api/events?tenant=$tid&limit=100")
    a=$(jq -r '[.events[] | select(.kind == "migration.backed-up")][0].at // empty' <<<"$ev")
    b=$(jq -r '[.events[] | select(.kind == "migration.done")][-1].at // empty' <<<"$ev")
    [ -n "$a" ] && [ -n "$b" ] && MIG_S[$i]=$(secs "$(epoch_of "$a")" "$(epoch_of "$b")")
    echo "   $tid: $(jq -r '[.events[] | select(.kind | startswith("migration.")) | .kind | ltrimstr("migration.")] | join(" -> ")' <<<"$ev") in ${MIG_S[$i]:-?} s"
    c=$(pool_of "$tid")
    check "$tid: the legacy container is gone, the tenant answers in $c" \
      all '! docker inspect "$tid" >/dev/null 2>&1' 'dpong "$tid"'
    j=$(db_in "$c" check "$(vol_db "$tid")")
    check "$tid's trade DB in its tenant volume /freqtrade/user_data: FreqTrade's tables, marker: $(brief "$j")" db_is "$j" "" "legacy-$i"
    seen=$(seen_by_bot "$tid")
    check "$tid, at its start in the pool, read: $seen" seen_is "$seen" /freqtrade/user_data/tradesv3.sqlite "legacy-$i"
    j=$(python3 "$FTDB" check "$work/ud-$i/tradesv3.sqlite")
    check "the legacy bind folder ud-$i is kept: $(brief "$j")" db_is "$j" "" "legacy-$i"
  done
  c=$(pool_of "$DDEP-legacy-1")
  check "$DDEP-legacy-1's 100 MiB file came along (md5 $ud1_sum)" \
    [ "$(sum_in "$c" "/tenants/$DDEP-legacy-1/volumes/freqtrade%2Fuser_data/ballast.bin")" = "$ud1_sum" ]
  migrate --status >"$work/status.txt" 2>&1 || true
  check "migrate --status says the mounts are kept: $(grep -c 'mounts are kept for a rollback' "$work/status.txt") of 3" \
    [ "$(grep -c 'mounts are kept for a rollback' "$work/status.txt")" = 3 ]

  echo "== 8b. a write while pooled, then slotpack migrate --rollback=$DDEP-legacy-1"
  tid=$DDEP-legacy-1
  j=$(db_in "$c" mark "$(vol_db "$tid")" pooled-1)
  check "marker row pooled-1 written in the pooled bot's DB: $(brief "$j")" db_is "$j" "" legacy-1 pooled-1
  t0=$(now)
  rc=0
  migrate --rollback="$tid" >"$work/rollback.txt" 2>&1 || rc=$?
  rollback_s=$(since "$t0")
  sed 's/^/   | /' "$work/rollback.txt"
  check "slotpack migrate --rollback: rc $rc in ${rollback_s} s" [ "$rc" = 0 ]
  j=$(python3 "$FTDB" check "$work/ud-1/tradesv3.sqlite")
  check "the legacy bind folder ud-1 has the pooled write: $(brief "$j"), owner uid $(jq -r .uid <<<"$j")" \
    all 'db_is "$j" "" legacy-1 pooled-1' '[ "$(jq -r .uid <<<"$j")" = 0 ]'
  check "ud-1's 100 MiB file unchanged" [ "$(md5sum "$work/ud-1/ballast.bin" | cut -d' ' -f1)" = "$ud1_sum" ]
  legacy1_up() {
    local addr
    addr=$(docker port "$tid" 8080/tcp 2>/dev/null | head -1)
    [ -n "$addr" ] && pong "http://$addr/api/v1/ping"
  }
  if wait_for "$WAIT" "the legacy container answers again" legacy1_up; then
    pass "the legacy container $tid answers again ($(docker inspect -f '{{.State.Status}}' "$tid"), $(since "$t0") s after the rollback began)"
  else
    fail "the legacy container $tid does not answer again"
  fi
  seen=$(seen_by_legacy "$tid")
  check "the legacy bot, at its start, read: $seen" seen_is "$seen" /freqtrade/user_data/tradesv3.sqlite legacy-1 pooled-1
  code=$(dapi GET "/api/tenants/$tid" -o /dev/null -w '%{http_code}')
  check "the tenant $tid is gone from slotpack: GET answers $code" [ "$code" = 404 ]
fi

echo
echo "== data round figures (FreqTrade $FT_VERSION, docker backend, $(nproc) CPUs; each time until the bot's new run answers its ping)"
echo "   consolidation move of a bot with 100 MiB more in its home: ${move_s:-?} s after the move's event (${move_total:-?} s after the DELETE that made the pools sparse)"
echo "   restart of the same bot in its own slot:                   ${restart_s:-?} s"
echo "   PUT /api/tenants/{id} changing its config:                 answered in ${put_answer:-?} ms, new config served ${put_s:-?} s after the PUT"
echo "   class image roll (1 pool, 2 bots):                         roll.done ${roll_s:-?} s after the PUT (it waits for the agent's first ping, $((PING_DELAY_MS / 1000)) s after each start), its 2 bots answer again ${BACK[dt-1]:-?} s and ${BACK[dt-3]:-?} s after the PUT"
echo "   slotpack migrate --execute of 3 legacy bots:               ${migrate_s:-?} s; per bot (backed-up -> done): 100 MiB of user_data ${MIG_S[1]:-?} s, FreqTrade's files only ${MIG_S[2]:-?} s and ${MIG_S[3]:-?} s"
echo "   slotpack migrate --rollback of the 100 MiB bot:            ${rollback_s:-?} s"
[ -f bench-out/data.txt ] && echo "   (the test-image figures of scripts/bench-data.sh: bench-out/data.txt)"
if [ "$fails" = 0 ]; then
  echo "== data round: every check PASSed"
else
  echo "== data round: $fails checks FAILed"
  exit 1
fi
