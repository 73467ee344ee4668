#!/usr/bin/env bash
# Stop the daemons .ci/slurm/start.sh started, by their recorded PIDs, in reverse start order.
set -uo pipefail
pids=${SLURM_CI_STATE:-/tmp/seminfo-slurm}/pids
[ -d "$pids" ] || exit 0
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    [ -f "$pids/$name" ] || continue
    pid=$(cat "$pids/$name")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$pids/$name"
done
exit 0
