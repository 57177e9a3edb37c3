#!/usr/bin/env bash
# Local multi-node cluster. Contract: API.md ("cluster.sh").
#   ./cluster.sh start [N]   start N nodes (default 3), wait until every shard has a leader
#   ./cluster.sh stop | status | kill I | restart I | pause I | resume I | clean
# Environment: KV_DATA_DIR (./.cluster), KV_BASE_PORT (7001), KV_PEER_BASE_PORT (KV_BASE_PORT+1000),
#              KV_SHARDS (16), KV_REPLICAS (3, at most N), KV_TICK_MS (100), KV_NODE_ARGS (extra flags).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="${KV_DATA_DIR:-./.cluster}"
mkdir -p "$DATA"
DATA="$(cd "$DATA" && pwd)"
STATE="$DATA/cluster.env"

die() { echo "cluster.sh: $*" >&2; exit 1; }

load_state() {
  [ -f "$STATE" ] || die "no cluster in $DATA (run: ./cluster.sh start)"
  # shellcheck disable=SC1090
  . "$STATE"
}

pid_of() { cat "$DATA/node-$1.pid" 2>/dev/null || true; }
alive() { local p; p="$(pid_of "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
check_index() {
  [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$N" ] || die "node index must be 1..$N, got '${1:-}'"
}

peers_spec() {
  local s="" i
  for i in $(seq 1 "$N"); do
    s+="${s:+,}$i=127.0.0.1:$((BASE + i - 1)):$((PEER_BASE + i - 1))"
  done
  echo "$s"
}

start_node() {
  local i="$1"
  if alive "$i"; then echo "node $i already running (pid $(pid_of "$i"))"; return 0; fi
  # shellcheck disable=SC2086
  # Two libuv pool threads, not four: less node CPU per request (README, "Running a node by hand").
  UV_THREADPOOL_SIZE="${UV_THREADPOOL_SIZE:-2}" nohup node --import tsx "$ROOT/node/main.ts" --id "$i" --peers "$(peers_spec)" --data "$DATA/node-$i" \
    --shards "$SHARDS" --replicas "$REPLICAS" --tick-ms "$TICK_MS" ${NODE_ARGS} \
    >>"$DATA/node-$i.log" 2>&1 </dev/null &
  echo $! >"$DATA/node-$i.pid"
}

# Wait (bounded) until every shard has a leader known to some node.
wait_leaders() {
  local deadline=$(( $(date +%s) + ${1:-60} ))
  ( cd "$ROOT" && node -e '
    const [n, base, deadline] = process.argv.slice(1).map(Number);
    const urls = Array.from({ length: n }, (_, i) => `http://127.0.0.1:${base + i}`);
    async function once() {
      const leaders = new Map();
      let shards = 0;
      for (const u of urls) {
        try {
          const r = await fetch(`${u}/v1/cluster`, { signal: AbortSignal.timeout(1000) });
          const m = await r.json();
          shards = m.shards.length;
          for (const s of m.shards) if (s.leader !== null) leaders.set(s.id, s.leader);
        } catch {}
      }
      return shards > 0 && leaders.size === shards;
    }
    (async () => {
      while (Date.now() / 1000 < deadline) {
        if (await once()) process.exit(0);
        await new Promise((r) => setTimeout(r, 200));
      }
      process.exit(1);
    })();
  ' "$N" "$BASE" "$deadline" )
}

cmd="${1:-help}"
case "$cmd" in
  start)
    N="${2:-3}"
    [[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] || die "N must be a positive integer"
    if [ -f "$STATE" ]; then
      . "$STATE"
      [ "$N" = "${2:-$N}" ] || true
    fi
    N="${2:-${N:-3}}"
    BASE="${KV_BASE_PORT:-${BASE:-7001}}"
    PEER_BASE="${KV_PEER_BASE_PORT:-${PEER_BASE:-$((BASE + 1000))}}"
    SHARDS="${KV_SHARDS:-${SHARDS:-16}}"
    REPLICAS="${KV_REPLICAS:-${REPLICAS:-$(( N < 3 ? N : 3 ))}}"
    TICK_MS="${KV_TICK_MS:-${TICK_MS:-100}}"
    NODE_ARGS="${KV_NODE_ARGS:-${NODE_ARGS:-}}"
    [ "$REPLICAS" -le "$N" ] || die "KV_REPLICAS=$REPLICAS exceeds N=$N"
    cat >"$STATE" <<EOS
N=$N
BASE=$BASE
PEER_BASE=$PEER_BASE
SHARDS=$SHARDS
REPLICAS=$REPLICAS
TICK_MS=$TICK_MS
NODE_ARGS="$NODE_ARGS"
EOS
    [ -d "$ROOT/node_modules" ] || die "dependencies missing: run npm install first"
    for i in $(seq 1 "$N"); do start_node "$i"; done
    if ! wait_leaders 60; then
      echo "cluster.sh: not every shard has a leader after 60 s; logs in $DATA/node-*.log" >&2
      tail -n 5 "$DATA"/node-*.log >&2 || true
      exit 1
    fi
    echo "cluster of $N nodes up ($SHARDS shards x $REPLICAS replicas), data in $DATA"
    for i in $(seq 1 "$N"); do echo "  node $i: http://127.0.0.1:$((BASE + i - 1))  (pid $(pid_of "$i"))"; done
    echo "try:"
    echo "  curl -X PUT --data-binary 'hello' http://127.0.0.1:$BASE/v1/kv/acme/greeting"
    echo "  curl http://127.0.0.1:$BASE/v1/kv/acme/greeting"
    echo "  curl 'http://127.0.0.1:$BASE/v1/kv/acme/greeting?consistency=stale'"
    ;;
  stop)
    load_state
    for i in $(seq 1 "$N"); do
      if alive "$i"; then kill -CONT "$(pid_of "$i")" 2>/dev/null || true; kill -TERM "$(pid_of "$i")"; fi
    done
    for i in $(seq 1 "$N"); do
      for _ in $(seq 1 100); do alive "$i" || break; sleep 0.1; done
      if alive "$i"; then echo "node $i did not stop in 10 s; killing" >&2; kill -KILL "$(pid_of "$i")" || true; fi
      rm -f "$DATA/node-$i.pid"
    done
    echo "stopped"
    ;;
  status)
    load_state
    for i in $(seq 1 "$N"); do
      url="http://127.0.0.1:$((BASE + i - 1))"
      if alive "$i"; then
        st="$(ps -o state= -p "$(pid_of "$i")" 2>/dev/null | tr -d ' ')"
        if [ "$st" = "T" ]; then echo "node $i: paused  $url"; continue; fi
        ready="$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$url/ready" || true)"
        echo "node $i: up (pid $(pid_of "$i"), ready=$([ "$ready" = 200 ] && echo yes || echo no))  $url"
      else
        echo "node $i: down  $url"
      fi
    done
    ;;
  kill)
    load_state; check_index "${2:-}"
    alive "$2" || die "node $2 is not running"
    kill -KILL "$(pid_of "$2")"
    for _ in $(seq 1 50); do alive "$2" || break; sleep 0.1; done
    rm -f "$DATA/node-$2.pid"
    echo "node $2 killed (SIGKILL)"
    ;;
  restart)
    load_state; check_index "${2:-}"
    if alive "$2"; then kill -CONT "$(pid_of "$2")" 2>/dev/null || true; kill -TERM "$(pid_of "$2")"; for _ in $(seq 1 100); do alive "$2" || break; sleep 0.1; done; fi
    alive "$2" && kill -KILL "$(pid_of "$2")"
    start_node "$2"
    url="http://127.0.0.1:$((BASE + $2 - 1))"
    for _ in $(seq 1 300); do
      [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "$url/ready" || true)" = 200 ] && { echo "node $2 restarted (pid $(pid_of "$2"))"; exit 0; }
      alive "$2" || die "node $2 exited during start; see $DATA/node-$2.log"
      sleep 0.1
    done
    die "node $2 not ready after 30 s; see $DATA/node-$2.log"
    ;;
  pause)
    load_state; check_index "${2:-}"
    alive "$2" || die "node $2 is not running"
    kill -STOP "$(pid_of "$2")"; echo "node $2 paused (SIGSTOP)"
    ;;
  resume)
    load_state; check_index "${2:-}"
    alive "$2" || die "node $2 is not running"
    kill -CONT "$(pid_of "$2")"; echo "node $2 resumed (SIGCONT)"
    ;;
  clean)
    if [ -f "$STATE" ]; then
      . "$STATE"
      for i in $(seq 1 "$N"); do alive "$i" && die "node $i is running: ./cluster.sh stop first"; done
    fi
    rm -rf "$DATA"
    echo "removed $DATA"
    ;;
  *)
    echo "usage: ./cluster.sh start [N] | stop | status | kill I | restart I | pause I | resume I | clean" >&2
    exit 2
    ;;
esac
