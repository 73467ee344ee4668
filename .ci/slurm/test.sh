#!/usr/bin/env bash
# End-to-end check of workflow/profiles/slurm against a real SLURM controller on localhost:
#  0. dry-run the CIFAR10 config through the profile: GPU requests, 20 sampling shards (.ci/slurm/dryrun.sh);
#  1. start a single-node SLURM with accounting (.ci/slurm/start.sh; stopped again on exit, also on failure);
#  2. run .ci/slurm/tiny.yaml (a Gaussian mixture and a tiny digits DDPM) locally and through the slurm
#     profile, and check that the summary datasets agree within 1e-6 and that training and sampling held a GPU;
#  3. run .ci/slurm/broken.yaml (its training job fails on the cluster) through the slurm profile and check
#     that Snakemake fails and names the job's SLURM log and rule log.
# The three runs go side by side: the SLURM runs mostly wait for the scheduler.
# Usage: bash .ci/slurm/test.sh   (as root; installs Debian's slurm-wlm, munge, slurmdbd, mariadb-server)
#        KEEP_WORK=1 keeps the work folders for inspection.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export MPLBACKEND=Agg
start=$SECONDS
work=$(mktemp -d /tmp/seminfo-slurm-test.XXXXXX)
runs=()  # PIDs of the Snakemake runs in flight
cleanup() {
    local pid
    for pid in "${runs[@]}"; do kill -INT "$pid" 2>/dev/null || true; done  # timeout passes it to Snakemake
    wait 2>/dev/null || true
    bash "$here/stop.sh"
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work folders kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # run cleanup when interrupted or stopped, too
fail() {  # fail <output file> <message>
    tail -n 60 "$1"
    echo "FAILED: $2"
    exit 1
}

[ "$(nproc)" -ge 2 ] || { echo "FAILED: needs 2 CPU cores (the slurm profile's GPU jobs ask for 2)"; exit 1; }
echo "== dry run of the CIFAR10 config through the slurm profile"
bash "$here/dryrun.sh"
bash "$here/start.sh"

# Every run is bounded by SIGINT, on which Snakemake cancels its SLURM jobs and exits (SIGTERM can hang it).
smk() {  # smk <workdir> <snakemake args...>, started in the background: $! is then the PID of timeout
    local dir=$1
    shift
    exec timeout -s INT -k 30 420 python -m snakemake -s "$repo/Snakefile" -d "$dir" "$@" >"$dir.out" 2>&1
}
# Status queries start 2 s after submission (default 40 s) and then back off by 10 s per query that finds no
# job finished: the tiny jobs take seconds.
slurm=(--workflow-profile "$repo/workflow/profiles/slurm" --slurm-init-seconds-before-status-checks 2)

for run in local slurm broken; do mkdir -p "$work/$run"; done
cp "$here/tiny.yaml" "$work/local/config.yaml"
cp "$here/tiny.yaml" "$work/slurm/config.yaml"
cp "$here/broken.yaml" "$work/broken/config.yaml"

echo "== tiny config locally and through the slurm profile; broken config through the slurm profile"
# The local run builds just the summaries it is compared on. --cores 2: training and sampling get the 2 threads
# the slurm profile gives them (set-threads); another torch thread count changes the DDPM's float32 results
# by more than the tolerance.
smk "$work/local" --workflow-profile "$repo/workflow/profiles/local" --cores 2 \
    results/tiny_gmm/summary.nc results/tiny_digits/summary.nc &
runs+=($!)
smk "$work/broken" "${slurm[@]}" &
runs+=($!)
smk "$work/slurm" "${slurm[@]}" &
runs+=($!)
wait "${runs[2]}" || fail "$work/slurm.out" "the SLURM run of the tiny config"
wait "${runs[0]}" || fail "$work/local.out" "the local run of the tiny config"
if wait "${runs[1]}"; then fail "$work/broken.out" "the broken config did not fail"; fi
runs=()
echo "   runs done after $((SECONDS - start)) s"

echo "== SLURM jobs of the tiny config"
# The plugin names each job by the run's ID and comments it with the rule (or group) and wildcards.
uuid=$(sed -n 's/^SLURM run ID: //p' "$work/slurm.out")
sacct -X -n --name "$uuid" -o JobID,State,Elapsed,AllocTRES%45,Comment%60 >"$work/jobs.txt"
sed 's/^/   /' "$work/jobs.txt"
count() { grep -cE "$1" "$work/jobs.txt" || true; }
[ "$(count 'gres/gpu=1.* rule_ddpm_train_')" = 1 ] || fail "$work/jobs.txt" "no training job holding a GPU"
[ "$(count 'gres/gpu=1.* rule_ddpm_sample_')" = 2 ] || fail "$work/jobs.txt" "not 2 sampling shard jobs holding a GPU"
[ "$(count ' rule_analysis_')" = 2 ] || fail "$work/jobs.txt" "not one grouped analysis job per experiment"
[ "$(count 'gres/gpu.* rule_analysis_')" = 0 ] || fail "$work/jobs.txt" "a grouped CPU job holds a GPU"
[ "$(count ' rule_(gmm_|ddpm_posterior|ddpm_collect|ddpm_quality|aggregate|decisions|plot_)')" = 0 ] \
    || fail "$work/jobs.txt" "a cheap stage ran as a job of its own"

echo "== local and SLURM summary datasets"
python "$here/compare.py" "$work/local" "$work/slurm" tiny_gmm tiny_digits | sed 's/^/   /'
[ "${PIPESTATUS[0]}" = 0 ] || fail "$work/slurm.out" "local and SLURM summaries differ"

echo "== the broken config: its failed cluster job fails the run and is named with its logs"
# Snakemake's error block for the job: "log: <rule log>, <SLURM log> (check log file(s) for error details)"
logs=$(grep -E "^ +log: results/broken/logs/ddpm_train.log, .*/slurm_logs/.*\.log " "$work/broken.out" || true)
[ -n "$logs" ] || fail "$work/broken.out" "the error message does not name the rule log and the SLURM log"
slurm_log=$(echo "$logs" | grep -oE "/[^ ,]*/slurm_logs/[^ ,]*\.log" | head -n 1)
grep -q "CIFAR-10 not found" "$slurm_log" || fail "$slurm_log" "the SLURM log does not show the job's error"
grep -q "DataError" "$work/broken/results/broken/logs/ddpm_train.log" \
    || fail "$work/broken/results/broken/logs/ddpm_train.log" "the rule log does not name the error"
echo "   failed as expected; SLURM log ${slurm_log#"$work"/}"

echo "== SLURM test passed in $((SECONDS - start)) s"
