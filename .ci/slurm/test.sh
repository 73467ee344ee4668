#!/usr/bin/env bash
# End-to-end check of workflow/profiles/slurm against a real SLURM controller on localhost:
#  1. start a single-node SLURM with accounting (.ci/slurm/start.sh; stopped again on exit, also on failure);
#  2. run .ci/slurm/tiny.yaml (a Gaussian mixture and a tiny digits DDPM) locally and through the slurm
#     profile, and check that the summary datasets agree within 1e-6;
#  3. run .ci/slurm/broken.yaml (its training job fails on the cluster) and check that Snakemake fails and
#     names the job's SLURM log and rule log.
# Usage: bash .ci/slurm/test.sh   (as root; installs Debian's slurm-wlm, munge, slurmdbd, mariadb-server)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export MPLBACKEND=Agg
start=$SECONDS
work=$(mktemp -d /tmp/seminfo-slurm-test.XXXXXX)
cleanup() {
    bash "$here/stop.sh"
    [ "${KEEP_WORK:-0}" = 1 ] && echo "work folders kept in $work" || rm -rf "$work"
}
trap cleanup EXIT

bash "$here/start.sh"

# Bounded by SIGINT: on SIGINT Snakemake cancels its SLURM jobs and exits (SIGTERM alone can hang it).
smk() {  # smk <seconds> <workdir> <snakemake args...>
    local seconds=$1 dir=$2
    shift 2
    timeout -s INT -k 30 "$seconds" python -m snakemake -s "$repo/Snakefile" -d "$dir" "$@"
}
# First status query shortly after submission: every job of the tiny configs takes a few seconds.
slurm=(--workflow-profile "$repo/workflow/profiles/slurm" --slurm-init-seconds-before-status-checks 5)

for run in local slurm broken; do mkdir -p "$work/$run"; done
cp "$here/tiny.yaml" "$work/local/config.yaml"
cp "$here/tiny.yaml" "$work/slurm/config.yaml"
cp "$here/broken.yaml" "$work/broken/config.yaml"

echo "== local run of the tiny config"
smk 300 "$work/local" --workflow-profile "$repo/workflow/profiles/local" --quiet rules \
    >"$work/local.out" 2>&1 || { tail -n 60 "$work/local.out"; exit 1; }

echo "== the same config through the slurm profile"
smk 300 "$work/slurm" "${slurm[@]}" >"$work/slurm.out" 2>&1 || { tail -n 80 "$work/slurm.out"; exit 1; }
sacct -X -n -o JobName%40,State,AllocTRES%60 | sed 's/^/   /'
njobs=$(sacct -X -n -o JobID | wc -l)
gpu_jobs=$(sacct -X -n -o AllocTRES%80 | grep -c "gres/gpu=1" || true)
# tiny_gmm: 1 group job; tiny_digits: training + 2 shards + 1 group job
[ "$njobs" = 5 ] || { echo "expected 5 SLURM jobs, got $njobs"; exit 1; }
[ "$gpu_jobs" = 3 ] || { echo "expected 3 jobs holding a GPU (training, 2 shards), got $gpu_jobs"; exit 1; }

echo "== local and SLURM summaries"
python "$here/compare.py" "$work/local" "$work/slurm" tiny_gmm tiny_digits

echo "== a job that fails on the cluster fails the run and names its logs"
if smk 300 "$work/broken" "${slurm[@]}" >"$work/broken.out" 2>&1; then
    tail -n 40 "$work/broken.out"; echo "the broken config did not fail"; exit 1
fi
slurm_log=$(grep -oE "[^ ,'\"]*\.snakemake/slurm_logs/[^ ,'\"]*\.log" "$work/broken.out" | head -n 1 || true)
[ -n "$slurm_log" ] && [ -s "$slurm_log" ] \
    || { tail -n 40 "$work/broken.out"; echo "no SLURM log path in Snakemake's error message"; exit 1; }
grep -q "results/broken/logs/ddpm_train.log" "$work/broken.out" \
    || { tail -n 40 "$work/broken.out"; echo "no rule log path in Snakemake's error message"; exit 1; }
grep -q "DataError" "$work/broken/results/broken/logs/ddpm_train.log" \
    || { cat "$work/broken/results/broken/logs/ddpm_train.log"; echo "the rule log does not name the error"; exit 1; }
echo "   failed as expected; SLURM log: $slurm_log"

echo "== SLURM test passed in $((SECONDS - start)) s"
