#!/usr/bin/env bash
# Stop the daemons .ci/slurm/start.sh started, by their recorded PIDs: the SLURM daemons first, then the
# database and munged they talk to. Each gets SIGTERM and 10 s to exit before SIGKILL.
set -uo pipefail
pids=${SLURM_CI_STATE:-/tmp/seminfo-slurm}/pids
[ -d "$pids" ] || exit 0

stop() {  # stop <name>...: signal them together, then wait for each
    local name pid
    local -a alive=()
    for name in "$@"; do
        [ -f "$pids/$name" ] || continue
        pid=$(cat "$pids/$name")
        rm -f "$pids/$name"
        # only if that PID is still the daemon (a stale file from a reboot may name another process)
        [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = "$name" ] || continue
        kill -TERM "$pid" && alive+=("$pid")
    done
    for pid in "${alive[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    done
}
stop slurmd slurmctld slurmdbd
stop mariadbd munged
exit 0
