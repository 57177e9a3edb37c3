#!/usr/bin/env bash
# Session 17's single-run write measurement: a fresh ./cluster.sh cluster started with the environment
# given (ablation switches from session17-write-path.patch, applied in a scratch clone), 1 s + 3 s of
# writes to warm up, then 8 s measured: node CPU per write (from /proc, all three nodes), rounds, WAL
# appends and persist batches per write (from /metrics).
#   bench/ablations/measure-writes.sh "ABL_WAL=1" nowal
# Run from the root of the (scratch) checkout; nothing else may run on the machine meanwhile.
set -euo pipefail
envs=$1
label=$2
a=$(mktemp); b=$(mktemp)
cleanup() { ./cluster.sh stop >/dev/null 2>&1 || true; rm -f "$a" "$b"; }
trap cleanup EXIT
./cluster.sh stop >/dev/null 2>&1 || true
./cluster.sh clean >/dev/null 2>&1 || true
env $envs ./cluster.sh start 3 >/dev/null
# This cluster's nodes only (cluster.sh's pid files), not every node process on the machine.
pids=$(cat "${KV_DATA_DIR:-./.cluster}"/node-*.pid | tr '\n' ' ')
cpu() { local t=0; for p in $pids; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
metrics() { for i in 1 2 3; do curl -s "http://127.0.0.1:700$i/metrics" | grep -E '^kv_round_phase_seconds_count|^kv_round_persist_ops_(count|sum)|^kv_http_requests_total\{route="/v1/kv/:tenant/:key",method="PUT",status="200"'; done; }
ends=http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003
npm run -s bench -- --endpoints $ends --workload write --duration 3 --warmup 1 --concurrency 64 --quiet >/dev/null 2>&1
# (The CPU window also holds the load generator's start and stop, ≈ 1 s of idle nodes: a small upward bias.
# A write forwarded to its leader counts at both nodes; the raw client routes to leaders, so that is rare.)
metrics >"$a"; c0=$(cpu)
npm run -s bench -- --endpoints $ends --workload write --duration 8 --warmup 0 --concurrency 64 --quiet 2>/dev/null | grep '^| write'
c1=$(cpu); metrics >"$b"
python3 - "$c0" "$c1" "$label" "$a" "$b" <<'PY'
import sys
def load(p):
    d = {}
    for l in open(p):
        parts = l.split()
        if len(parts) < 2: continue
        name, labels = parts[0].split('{')[0], parts[0]
        phase = labels.split('phase="')[1].split('"')[0] if 'phase=' in labels else ''
        d[f'{name}{{{phase}}}'] = d.get(f'{name}{{{phase}}}', 0) + float(parts[1])
    return d
a, b = load(sys.argv[4]), load(sys.argv[5])
dd = {k: b[k] - a.get(k, 0) for k in b}
w = dd['kv_http_requests_total{}']
cpu = (int(sys.argv[2]) - int(sys.argv[1])) * 10000  # clock ticks (100/s) -> µs
print(sys.argv[3], 'writes', int(w), 'node CPU µs/write', round(cpu / w), 'rounds/write', round(dd['kv_round_phase_seconds_count{round}'] / w, 3),
      'WAL appends/write', round(dd.get('kv_round_phase_seconds_count{wal}', 0) / w, 3), 'persists/write', round(dd['kv_round_persist_ops_count{}'] / w, 3),
      'ops/persist', round(dd['kv_round_persist_ops_sum{}'] / dd['kv_round_persist_ops_count{}'], 1))
PY
