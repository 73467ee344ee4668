#!/usr/bin/env bash
# The GPU checks of BENCHMARKS.md ("GPU"), in one script, each step under its own time limit:
#   1. python -m seminfo.bench on the CIFAR10 UNet (bf16, torch.compile), a DiT-XL/2-256-size and an SD-1.5-UNet-size
#      network (random weights), with the rounding noise of TF32 and bf16 and the entropy bias it predicts at paper
#      scale (--noise) and the top kernels (--profile);
#   2. a short workflow run on the GPU (benchmarks/gpu/workflow.yaml, generated data in the CIFAR10 format), then
#      benchmarks/gpu/check_workflow.py: one shard again on the CPU, and the sampling loop's host syncs;
#   3. an SD3-medium-size transformer's throughput and rounding noise.
# Usage, from the repository root on a machine with a CUDA GPU and the package's requirements (or PYTHONPATH=src):
#   OUT=some/folder bash benchmarks/gpu/run.sh
# Writes $OUT/results.jsonl (one line per step: name, exit code, seconds, the step's JSON output), $OUT/log.txt and
# $OUT/workflow.tar.gz (the workflow's figures, logs and benchmark files).
set -uo pipefail
OUT=${OUT:-benchmarks/gpu/out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1
: > "$OUT/results.jsonl"
log="$OUT/log.txt"

step() {  # step NAME LIMIT_SECONDS COMMAND...: run it, keep its last stdout line as the step's JSON
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T))" | tee -a "$log"
    local began=$SECONDS rc
    timeout "$limit" "$@" > "$OUT/$name.stdout" 2>> "$log"
    rc=$?
    python3 - "$name" "$rc" "$((SECONDS - began))" "$OUT/$name.stdout" >> "$OUT/results.jsonl" <<'EOF'
import json, sys
name, rc, seconds, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lines = [l for l in open(path).read().splitlines() if l.strip()]
try:
    result = json.loads(lines[-1])
except (IndexError, ValueError):
    result = {"stdout_tail": lines[-5:]}
print(json.dumps({"step": name, "rc": rc, "seconds": seconds, "result": result}))
EOF
    rm -f "$OUT/$name.stdout"
    echo "   $name: exit $rc, $((SECONDS - began)) s" | tee -a "$log"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
} 2>&1 | tee -a "$log"

bench="python3 -m seminfo.bench --device cuda --rss-steps none --noise --profile"
step bench_cifar10 320 $bench --preset cifar10_ddpm --noise-samples 8
step bench_dit 90 $bench --preset dit_xl2_256 --no-compile --trajectories 32 --steps 3 --eval-batch 320 --parts fast,exact --repeats 2
step bench_sd15 200 $bench --preset sd15_unet --no-compile --classes 4 --trajectories 16 --steps 3 --eval-batch 64 \
    --parts fast,exact --repeats 2

# the workflow: generated CIFAR10-format data, the local profile, then the agreement and sync checks
python3 -c "from seminfo.ddpm.data import write_fake_cifar10; write_fake_cifar10('data/gpu_cifar10', n_per_class=100)"
step workflow 220 snakemake --workflow-profile workflow/profiles/local --configfile benchmarks/gpu/workflow.yaml --quiet
step check_workflow 150 python3 benchmarks/gpu/check_workflow.py benchmarks/gpu/workflow.yaml cifar10_gpu
tar -czf "$OUT/workflow.tar.gz" results/cifar10_gpu/figures results/cifar10_gpu/logs results/cifar10_gpu/benchmarks \
    2>> "$log"

step bench_sd3 150 $bench --preset sd3_medium --no-compile --classes 2 --trajectories 4 --steps 2 --eval-batch 8 \
    --parts fast --repeats 2 --noise-samples 2
echo "== done ($(date +%T))" | tee -a "$log"
