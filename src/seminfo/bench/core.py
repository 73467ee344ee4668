"""Benchmark of the sampling+posterior loop (and of training): ``python -m seminfo.bench``.

In one process, on the same trajectories (same labels, indices and seeds), it times side by side

- the fast path: ``seminfo.chain.sampler.sample_trajectories`` with the chosen precision, pruning and compile;
- the fp32 reference: the same loop, exact (no pruning) and fp32, whose entropy curves are the yardstick;
- one-vs-rest tracking (``tracking="one_vs_rest"``, eager fp32): 2 evaluations per step instead of K, on the same
  trajectories (their evaluation count and rate against full tracking);
- the naive loop a user would write: one eager fp32 forward per class per step at the same trajectory
  batch, the mean as in diffusers' ``DDPMScheduler.step`` (x0 prediction, then the posterior-mean
  coefficients), ``torch.distributions.Normal`` log-probabilities, no pruning. It draws its noise from
  the same counter-based generator (under 1 % of its time), so it walks the very same trajectories and
  its entropies check the fast path's arithmetic too.

It measures the matmul peak of the machine in the precision the fast path uses, the FLOPs of one network
evaluation (``torch.utils.flop_counter.FlopCounterMode``), and the peak resident memory of the fast path
at two step counts (each in a fresh subprocess). Timed parts run ``--repeats`` times in rotating order;
medians are reported. The last line printed is one JSON object.

CPU (the defaults): the digits preset, its trained weights from results/digits/model when present (random
weights otherwise; pruning then saves little, since a random network hardly decides).
GPU: ``python -m seminfo.bench --device cuda --preset cifar10_ddpm`` — the DDPM-paper CIFAR10 UNet with
random weights, bf16 autocast, torch.compile, and an estimate of the paper-scale run (1000 trajectories x
10 classes x 1000 steps). It needs torch, numpy, scipy, tqdm, xarray and diffusers (no snakemake, no
netCDF4); on a machine without diffusers carry its wheel (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..chain.diffusion import reverse_chain
from ..chain.evaluator import PRECISIONS
from ..chain.noise import check_indices, normal
from ..chain.posterior import entropy_bits, online_log_posterior
from ..chain.pruning import pruning_error_bound
from ..chain.sampler import sample_trajectories
from ..chain.schedules import make_schedule
from ..ddpm.model import ARCH_PRESETS, ClassConditionalUNet, resolve_arch
from ..models import NetworkAdapter
from .networks import NETWORKS, PAPER_SCALE, build_network

log = logging.getLogger("seminfo.bench")

IMAGE_SHAPES = {"digits": (1, 8, 8), "cifar10_ddpm": (3, 32, 32)}
TRAINED_DIGITS = Path("results/digits/model/model.safetensors")
PARTS = ("fast", "exact", "naive", "ovr")  # the timed loops (module docstring); fast always runs
GATE_BITS = 0.01  # entropy curves of the fast path must stay this close to fp32 on the same seeds
DEFAULTS = {
    #            trajectories steps eval_batch precision compile prune_log_threshold repeats
    "cpu": dict(trajectories=100, steps=100, eval_batch=250, precision="fp32", compile=True,
                prune_log_threshold=-12.0, repeats=3, rss_steps=(10, 100)),
    "cuda": dict(trajectories=100, steps=20, eval_batch=1000, precision="bf16", compile=True,
                 prune_log_threshold=None, repeats=3, rss_steps=(5, 20)),
}  # fmt: skip


# --- the machine -------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu}, {torch.get_num_threads()} threads"


def matmul_peak_gflops(precision: str, device: torch.device, repeats: int = 5) -> float:
    """Best median rate of square matmuls in ``precision`` (fp32 with TF32 off, tf32, or bf16 inputs): the
    achievable peak of the dense-math units, GFLOP/s."""
    from ..chain.evaluator import network_precision

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    sizes = (8192,) if device.type == "cuda" else (1024, 2048, 3072)
    best = 0.0
    with network_precision("fp32" if precision == "bf16" else precision, device):
        for n in sizes:
            a = torch.randn(n, n, device=device).to(dtype)
            b = torch.randn(n, n, device=device).to(dtype)
            inner = 20 if device.type == "cuda" else 1
            for _ in range(2):
                a @ b
            times = []
            for _ in range(repeats):
                sync(device)
                began = time.perf_counter()
                for _ in range(inner):
                    a @ b
                sync(device)
                times.append((time.perf_counter() - began) / inner)
            best = max(best, 2.0 * n**3 / float(np.median(times)) / 1e9)
    return best


def _probe_inputs(model, device: torch.device, batch: int):
    """A batch of (x, t, label) to count a network's FLOPs on."""
    x = torch.randn((batch, *model.image_shape), device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    return x, t, torch.zeros(batch, device=device, dtype=torch.long)


def flops_per_eval(model, device: torch.device, batch: int = 4) -> float:
    """FLOPs of one class-conditional network evaluation (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, t, y = _probe_inputs(model, device, batch)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t, y)
    return counter.get_total_flops() / batch


def training_flops_per_image(model, device: torch.device, batch: int = 4) -> float:
    """FLOPs of one training example: forward and backward of the MSE loss."""
    from torch.utils.flop_counter import FlopCounterMode

    x, t, y = _probe_inputs(model, device, batch)
    model.train()
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.mse_loss(model(x, t, y), x).backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    return counter.get_total_flops() / batch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


# --- the model and the workload ----------------------------------------------------------------------


def build_model(preset: str, model_path, num_classes: int, device: torch.device):
    """The network to time: a checkpoint, the trained digits model when present, or random weights (the own presets,
    or a random-weight network of a published model's size from ``seminfo.bench.networks``)."""
    from ..ddpm.checkpoint import load_model

    if preset in NETWORKS and preset not in ARCH_PRESETS:
        return build_network(preset, num_classes, device), "random"
    path = Path(model_path) if model_path else (TRAINED_DIGITS if preset == "digits" else None)
    if path is not None and path.exists():
        model, record = load_model(path, map_location=device)
        return model.eval(), f"trained: {path}"
    if model_path:
        raise FileNotFoundError(model_path)
    torch.manual_seed(0)
    model = ClassConditionalUNet(resolve_arch({"preset": preset}), IMAGE_SHAPES[preset], num_classes)
    return model.to(device).eval(), "random"


def as_adapter(model: ClassConditionalUNet, schedule) -> NetworkAdapter:
    """The sampler's view of the network: classes 0 … K-1, null label K, the chain's step as time input."""
    return NetworkAdapter(model, schedule, [str(k) for k in range(model.num_classes)], model.image_shape,
                          has_null=True, source="own")


def workload(trajectories: int, num_classes: int):
    """Class-major labels (as the stages lay trajectories out), their global indices and example mask."""
    labels = np.arange(trajectories) * num_classes // trajectories
    return labels, np.arange(trajectories)


def class_curves(h: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class means (classes present in ``labels``, ascending) of per-trajectory curves h (N, G)."""
    return np.stack([h[labels == k].mean(0) for k in np.unique(labels)])


def class_entropy(increments: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class mean posterior entropy (classes, G) in bits from increments (N, G-1, K), uniform prior."""
    prior = np.full((labels.size, num_classes), -math.log(num_classes))
    return class_curves(entropy_bits(online_log_posterior(prior, increments)), labels)


# --- the naive loop ----------------------------------------------------------------------------------


@torch.no_grad()
def naive_sample(model, chain, labels, indices, seed: int, num_classes: int, device) -> np.ndarray:
    """One eager fp32 forward per class per step; diffusers' DDPMScheduler.step arithmetic; Normal log-probs.

    Returns the per-trajectory entropy (N, G) in bits on the same grid as the fast path's posterior.
    """
    K, S, start = num_classes, chain.steps, chain.posterior_start
    shape = tuple(model.image_shape)
    N = len(labels)
    own = torch.as_tensor(labels, device=device)
    rows = torch.arange(N, device=device)
    indices = check_indices(indices).to(device)
    x = normal(seed, indices, 0, int(np.prod(shape)), device=device).float().view(N, *shape)
    log_p = torch.full((N, K), -math.log(K), device=device)
    entropy = torch.empty((N, S - start + 1), device=device)
    entropy[:, -1] = math.log2(K)
    for i in range(S, 0, -1):
        t = int(chain.times[i])
        ts = torch.full((N,), t, device=device, dtype=torch.long)
        eps = torch.stack([model(x, ts, torch.full((N,), c, device=device, dtype=torch.long)) for c in range(K)], 1)
        # DDPMScheduler.step (variance_type="fixed_small", clip_sample=False), for every class's eps
        alpha_prod_t, alpha_prod_t_prev = float(chain.alpha_bar[i]), float(chain.alpha_bar[i - 1])
        beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t
        pred_original_sample = (x[:, None] - beta_prod_t**0.5 * eps) / alpha_prod_t**0.5
        pred_original_sample_coeff = (alpha_prod_t_prev**0.5 * current_beta_t) / beta_prod_t
        current_sample_coeff = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t
        mean = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * x[:, None]
        variance = max(beta_prod_t_prev / beta_prod_t * current_beta_t, 1e-20)
        std = variance**0.5
        z = normal(seed, indices, i, int(np.prod(shape)), device=device).float().view(N, *shape)
        x = mean[rows, own] + std * z
        if i > start:
            loglik = torch.distributions.Normal(mean, std).log_prob(x[:, None]).flatten(2).sum(-1)
            log_p = torch.log_softmax(log_p + loglik, dim=1)
            entropy[:, i - 1 - start] = -(log_p.exp() * log_p).nan_to_num().sum(1) / math.log(2)
    return entropy.cpu().numpy()


# --- one benchmark -----------------------------------------------------------------------------------


def timed(fn):
    began = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - began


def run_benchmark(args, device: torch.device) -> dict:
    model, weights = build_model(args.preset, args.model, args.classes, device)
    naive_model = copy.deepcopy(model)  # as loaded: the fast path converts its model to channels-last
    K = args.classes
    schedule = make_schedule("linear", 1000)
    adapter = as_adapter(model, schedule)
    chain = reverse_chain(schedule, args.steps, "small")
    labels, indices = workload(args.trajectories, K)
    fast_opts = dict(precision=args.precision, compile=args.compile, prune_log_threshold=args.prune_log_threshold)
    exact_opts = dict(precision="fp32", compile=False, prune_log_threshold=None)

    def fast(opts, stats=None, chain=chain):
        return sample_trajectories(adapter, chain, labels, indices, args.seed, eval_batch=args.eval_batch,
                                   device=device, progress=False, stats=stats, **opts)

    log.info("device %s, weights %s; measuring the matmul peak and FLOPs per evaluation", describe_device(device),
             weights)
    peak = {p: matmul_peak_gflops(p, device) for p in PRECISIONS if p != "tf32" or device.type == "cuda"}
    flops = flops_per_eval(model, device)
    parts = args.parts
    ovr_opts = dict(exact_opts, tracking="one_vs_rest")
    opts_of = {"fast": fast_opts, "exact": exact_opts, "ovr": ovr_opts}
    # Warm up: oneDNN primitives and cuDNN plans on a short chain with the same shapes; compilation on the
    # whole chain, which meets every chunk size that pruning produces.
    short = reverse_chain(schedule, min(4, args.steps), "small")
    _, compile_seconds = timed(lambda: fast(fast_opts, chain=chain if args.compile else short))
    for name in parts[1:]:
        if name == "naive":
            naive_sample(naive_model, short, labels, indices, args.seed, K, device)
        else:
            fast(opts_of[name], chain=short)
    log.info("warm-up (compilation included) %.1f s", compile_seconds)

    runs = {name: [] for name in parts}
    for r in range(args.repeats):
        order = parts[r % len(parts):] + parts[:r % len(parts)]  # rotate: slow drifts of the load average out
        for name in order:
            sync(device)
            if name == "naive":
                out, seconds = timed(lambda: naive_sample(naive_model, chain, labels, indices, args.seed, K, device))
                runs[name].append({"seconds": seconds, "entropy": out})
            else:
                stats = {}
                out, _ = timed(lambda: fast(opts_of[name], stats))
                runs[name].append({**stats, "increments": out.increments})
            log.info("repeat %d %s: %.2f s", r, name, runs[name][-1]["seconds"])

    nominal = args.trajectories * K * args.steps  # what the naive loop evaluates
    med = lambda name, key: float(np.median([run[key] for run in runs[name]]))  # noqa: E731
    fast_s = med("fast", "seconds")
    performed = runs["fast"][0]["evaluations"]
    peak_gflops = peak[args.precision]
    achieved = performed * flops / fast_s / 1e9
    result = {
        "device": describe_device(device),
        "preset": args.preset,
        "weights": weights,
        "trajectories": args.trajectories,
        "steps": args.steps,
        "classes": K,
        "eval_batch": args.eval_batch,
        "precision": args.precision,
        "compile": args.compile,
        "compile_used": bool(runs["fast"][0]["compiled"]),
        "prune_log_threshold": args.prune_log_threshold,
        "repeats": args.repeats,
        "parts": list(parts),
        "evals_per_s": nominal / fast_s,
        "performed_evals_per_s": performed / fast_s,
        "evaluated_fraction": performed / nominal,
        "padded_fraction": runs["fast"][0]["padded"] / max(performed, 1),
        "model_fraction": med("fast", "model_seconds") / fast_s,
        "gflop_per_eval": flops / 1e9,
        "matmul_peak_gflops": peak_gflops,
        **{f"matmul_peak_gflops_{p}": v for p, v in peak.items()},
        "achieved_gflops": achieved,
        "fraction_of_peak": achieved / peak_gflops,  # MFU of the fast path against its precision's matmul peak
        "warmup_seconds": compile_seconds,
    }
    if "exact" in parts:
        exact_s = med("exact", "seconds")
        H_ref = class_entropy(runs["exact"][0]["increments"], labels, K)
        H_fast = class_entropy(runs["fast"][0]["increments"], labels, K)
        result |= {
            "exact_evals_per_s": nominal / exact_s,
            "exact_model_fraction": med("exact", "model_seconds") / exact_s,
            # MFU of the exact path (fp32, TF32 off) against the fp32 matmul peak
            "exact_fraction_of_peak": runs["exact"][0]["evaluations"] * flops / exact_s / 1e9 / peak["fp32"],
            "entropy_max_abs_diff_bits": float(np.abs(H_fast - H_ref).max()),
            "entropy_gate_passed": bool(np.abs(H_fast - H_ref).max() <= GATE_BITS),
        }
    if "naive" in parts:
        naive_s = med("naive", "seconds")
        result |= {"naive_evals_per_s": nominal / naive_s, "speedup_vs_naive": naive_s / fast_s}
        if "exact" in parts:
            H_naive = class_curves(runs["naive"][0]["entropy"], labels)
            result |= {"exact_speedup_vs_naive": naive_s / exact_s,
                       "naive_entropy_max_abs_diff_bits": float(np.abs(H_naive - H_ref).max())}
    if "ovr" in parts and "exact" in parts:
        # one-vs-rest tracking (2 evaluations per step: own class and null) on the same trajectories, eager fp32,
        # against the exact full-tracking path (K evaluations per step)
        ovr_s = med("ovr", "seconds")
        result |= {
            "ovr_evaluations": runs["ovr"][0]["evaluations"],
            "full_evaluations": runs["exact"][0]["evaluations"],
            "ovr_evaluation_ratio": runs["ovr"][0]["evaluations"] / runs["exact"][0]["evaluations"],
            "ovr_performed_evals_per_s": runs["ovr"][0]["evaluations"] / ovr_s,
            "ovr_speedup_vs_full": exact_s / ovr_s,
        }
    if args.prune_log_threshold is not None:
        result["pruning_entropy_bound_bits"] = pruning_error_bound(args.prune_log_threshold, K)[1]
    if args.preset in PAPER_SCALE:
        scale = PAPER_SCALE[args.preset]
        result["paper_scale_evaluations"] = scale.evaluations
        result["paper_scale_estimate_hours"] = scale.evaluations / result["evals_per_s"] / 3600
        if "exact" in parts:
            result["paper_scale_estimate_hours_fp32"] = scale.evaluations / result["exact_evals_per_s"] / 3600
    if args.profile:
        result["profile"] = profile_network(model, args, device)
    if args.noise:
        result["rounding_noise"] = rounding_noise_report(model, args, chain, K, device)
    return result


def rounding_noise_report(model, args, chain, K: int, device: torch.device) -> dict:
    """``seminfo.chain.precision``'s rounding noise of every reduced precision on this network, and the entropy bias it
    predicts for the network's paper-scale run (or, for the own presets, for the benchmark's own chain and K)."""
    from ..chain.precision import noise_table, predicted_bias
    from ..chain.schedules import schedule_from_scheduler_config

    scale = PAPER_SCALE.get(args.preset)
    schedule = make_schedule("linear", 1000)
    if scale is not None:
        schedule = schedule_from_scheduler_config(scale.schedule)
        chain, K = reverse_chain(schedule, scale.steps, "small"), scale.conditions
    reduced = [p for p in PRECISIONS if p != "fp32" and (p != "tf32" or device.type == "cuda")]
    conditions = (0, 1, min(2, model.num_classes))
    table = noise_table(model, model.image_shape, schedule, (1, 10, 50, 200, 500, 999), reduced, device,
                        samples=args.noise_samples, conditions=conditions)
    D = int(np.prod(model.image_shape))
    report = {"steps": chain.steps, "conditions": K, "D": D, "table": table}
    for p in reduced:
        report[p] = {"measured": predicted_bias(table, p, chain, K, D, relative=False),
                     "unit_output": predicted_bias(table, p, chain, K, D, relative=True)}
    return report


def profile_network(model, args, device: torch.device, calls: int = 3, top: int = 15) -> list:
    """Where the network's time goes: torch.profiler over a few forward calls of one chunk in the fast path's
    precision (eager), the ``top`` kernels by device (CPU: self CPU) time, with their share of the total."""
    from torch.profiler import ProfilerActivity, profile

    from ..chain.evaluator import network_precision

    x, t, y = _probe_inputs(model, device, args.eval_batch)
    if x.dim() == 4:  # as the evaluator feeds convolutional networks
        x = x.contiguous(memory_format=torch.channels_last)
    cuda = device.type == "cuda"
    with torch.no_grad(), network_precision(args.precision, device):
        model(x, t, y)
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(calls):
                model(x, t, y)
            sync(device)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key, 0) > 0]
    total = sum(getattr(e, key) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [{"name": e.key[:90], "share": round(getattr(e, key) / total, 4),
             "ms_per_call": round(getattr(e, key) / calls / 1e3, 3), "count": e.count // calls} for e in events[:top]]


def train_benchmark(args, device: torch.device, peak_fp32: float) -> dict:
    """Images/s of the real training loop (a short run) and its fraction of the fp32 matmul peak."""
    from ..ddpm.data import ImageData, load_images
    from ..ddpm.train import train

    arch = resolve_arch({"preset": args.preset})
    if args.preset == "digits":
        data = load_images({"name": "digits"})
    else:  # random images: throughput does not depend on the pixels
        g = torch.Generator().manual_seed(0)
        n = 10 * args.classes
        data = ImageData(torch.rand((n, *IMAGE_SHAPES[args.preset]), generator=g) * 2 - 1,
                         torch.arange(n) % args.classes, tuple(str(k) for k in range(args.classes)))
    cfg = {"steps": args.train_steps, "batch_size": args.train_batch, "warmup": 10, "checkpoint_every": 10**9}
    with tempfile.TemporaryDirectory() as tmp:
        stats = train(data, arch, cfg, make_schedule("linear", 1000), Path(tmp) / "model.safetensors",
                      Path(tmp) / "work", device=device)
    model = ClassConditionalUNet(arch, data.image_shape, data.num_classes).to(device)
    flops = training_flops_per_image(model, device)
    achieved = stats["images_per_s"] * flops / 1e9
    return {"train_images_per_s": stats["images_per_s"], "train_gflop_per_image": flops / 1e9,
            "train_achieved_gflops": achieved, "train_fraction_of_peak": achieved / peak_fp32,
            "train_steps": args.train_steps, "train_batch": args.train_batch}


def rss_probe(args, device: torch.device) -> dict:
    """Run the fast path once at ``args.steps`` and report this process's peak memory (for a subprocess)."""
    model, _ = build_model(args.preset, args.model, args.classes, device)
    labels, indices = workload(args.trajectories, args.classes)
    schedule = make_schedule("linear", 1000)
    chain = reverse_chain(schedule, args.steps, "small")
    sample_trajectories(as_adapter(model, schedule), chain, labels, indices, args.seed, eval_batch=args.eval_batch,
                        device=device, progress=False, precision=args.precision, compile=args.compile,
                        prune_log_threshold=args.prune_log_threshold)
    out = {"steps": args.steps, "peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def rss_at(args, steps: int) -> dict:
    """Peak memory of the fast path at ``steps`` steps, measured in a fresh interpreter."""
    cmd = [sys.executable, "-m", "seminfo.bench", "--rss-probe", "--steps", str(steps)]
    for key in ("device", "preset", "classes", "trajectories", "eval_batch", "precision", "seed", "threads"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.model:
        cmd += ["--model", str(args.model)]
    cmd += ["--no-compile"]  # compilation memory is a constant; the probes look at growth with steps
    if args.prune_log_threshold is not None:
        cmd += ["--prune-log-threshold", str(args.prune_log_threshold)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- command line ------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m seminfo.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--preset", default=None, choices=sorted(set(ARCH_PRESETS) | set(NETWORKS)),
                   help="network (default: digits on cpu, cifar10_ddpm on cuda); dit_xl2_256, sd15_unet and "
                        "sd3_medium are random-weight networks of those models' size (seminfo.bench.networks)")
    p.add_argument("--model", default=None, help="checkpoint (.safetensors) to time instead of the default weights")
    p.add_argument("--classes", type=int, default=10, help="number of classes K")
    p.add_argument("--trajectories", type=int, default=None, help="trajectories sampled together (N)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps S (respaced from T = 1000)")
    p.add_argument("--eval-batch", type=int, default=None, help="network evaluations per forward call")
    p.add_argument("--precision", default=None, choices=PRECISIONS, help="fast path precision")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    p.add_argument("--prune-log-threshold", type=float, default=None, help="pruning threshold (negative)")
    p.add_argument("--no-prune", action="store_true", help="fast path without pruning")
    p.add_argument("--repeats", type=int, default=None, help="repetitions of every timed run (medians reported)")
    p.add_argument("--rss-steps", default=None, help="two step counts for the peak-memory probes, e.g. 10,100; "
                                                     "'none' to skip")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"timed loops, comma-separated from {','.join(PARTS)} (fast always runs)")
    p.add_argument("--profile", action="store_true", help="also profile the network (top kernels) once")
    p.add_argument("--noise", action="store_true",
                   help="also measure the rounding noise of the reduced precisions (seminfo.chain.precision) and the "
                        "entropy bias it predicts at paper scale")
    p.add_argument("--noise-samples", type=int, default=4, help="states per time for --noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--train", action="store_true", help="also time the training loop")
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--dry-run", action="store_true", help="print the resolved options and exit")
    p.add_argument("--rss-probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    defaults = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    args.preset = args.preset or ("cifar10_ddpm" if device.type == "cuda" else "digits")
    for key in ("trajectories", "steps", "eval_batch", "precision", "compile", "repeats"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    parts = [q for q in args.parts.split(",") if q]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"--parts: unknown {unknown} (known: {', '.join(PARTS)})")
    args.parts = ["fast"] + [q for q in PARTS[1:] if q in parts]
    if args.no_prune:
        args.prune_log_threshold = None
    elif args.prune_log_threshold is None and not args.rss_probe:
        args.prune_log_threshold = defaults["prune_log_threshold"]
    if args.rss_steps is None:
        args.rss_steps = defaults["rss_steps"]
    elif args.rss_steps == "none":
        args.rss_steps = ()
    else:
        args.rss_steps = tuple(int(s) for s in args.rss_steps.split(","))
    return args, device


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    args, device = parse_args(argv)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":  # fp32 means fp32: the reference and the naive loop run without TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    if args.dry_run:
        print(json.dumps({k: v for k, v in vars(args).items() if k != "rss_probe"}, default=str))
        return 0
    if args.rss_probe:
        print(json.dumps(rss_probe(args, device)))
        return 0
    result = {"date": datetime.date.today().isoformat(), "torch": torch.__version__}
    load_start = os.getloadavg()[0]
    result |= run_benchmark(args, device)
    if args.train:
        result |= train_benchmark(args, device, result["matmul_peak_gflops_fp32"])
    if args.rss_steps:
        probes = [rss_at(args, s) for s in args.rss_steps]
        result["peak_rss_mb"] = {str(p["steps"]): round(p["peak_rss_mb"], 1) for p in probes}
        if device.type == "cuda":
            result["peak_gpu_mb"] = {str(p["steps"]): round(p["peak_gpu_mb"], 1) for p in probes}
    # other users' jobs on a shared machine skew the timings; the 1-minute load average tells
    result["load_avg_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    result["command"] = "python -m seminfo.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    for key, value in result.items():
        if key != "command":
            log.info("%-34s %s", key, f"{value:.4g}" if isinstance(value, float) else value)
    print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in result.items()}))
    return 0

