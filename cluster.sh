#!/usr/bin/env bash
# Local multi-node cluster script. Contract: ../shared/API.md ("cluster.sh").
# The storage node (node/) is not built yet: it is the next milestone. Until it
# lands, every command says so and exits non-zero rather than pretending.
set -euo pipefail
cmd="${1:-help}"
case "$cmd" in
  start|stop|status|kill|restart|pause|resume|clean)
    echo "cluster.sh $cmd: not available yet — the storage node (node/) is not built." >&2
    echo "What works today: the Raft core and its simulator (npm test, npm run sim -- --seeds 1..100)." >&2
    exit 2
    ;;
  *)
    echo "usage: ./cluster.sh start [N] | stop | status | kill I | restart I | pause I | resume I | clean" >&2
    exit 2
    ;;
esac
