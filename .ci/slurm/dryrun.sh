#!/usr/bin/env bash
# Dry run of the CIFAR10 paper-scale config through workflow/profiles/slurm: training and every sampling
# shard must ask for a GPU, and the 20 shards must be 20 jobs. Needs neither SLURM nor the CIFAR10 files.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/seminfo-slurm-dryrun.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$repo/config.yaml" "$work/config.yaml"  # a fresh folder: nothing built yet, every job shows
timeout -s INT 120 python -m snakemake -s "$repo/Snakefile" -d "$work" --workflow-profile "$repo/workflow/profiles/slurm" \
    --configfile "$repo/workflow/configs/cifar10.yaml" -n >"$work/dry.txt" 2>&1 || { tail -n 40 "$work/dry.txt"; exit 1; }
# "rule <name>:" opens a job's block (group members are indented); its "resources:" line follows.
awk '
    /^rule [a-z_]+:$/ { rule = substr($2, 1, length($2) - 1) }
    /^    resources: / && (rule == "ddpm_train" || rule == "ddpm_sample") {
        n[rule]++
        if ($0 ~ /[ ,]gpu=1(,|$)/) gpu[rule]++
    }
    END {
        printf "   ddpm_train: %d job(s), %d with gpu=1; ddpm_sample: %d job(s), %d with gpu=1\n",
            n["ddpm_train"], gpu["ddpm_train"], n["ddpm_sample"], gpu["ddpm_sample"]
        exit !(n["ddpm_train"] == 1 && gpu["ddpm_train"] == 1 && n["ddpm_sample"] == 20 && gpu["ddpm_sample"] == 20)
    }' "$work/dry.txt" || { echo "FAILED: the CIFAR10 dry run lacks GPU requests or 20 sampling shards"; exit 1; }
