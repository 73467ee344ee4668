"""Measure a class-conditional noise-prediction network defined right here, on the CPU, with seminfo.measure.

The network is a tiny convolutional eps-predictor eps(x_t, t, c) on 1x8x8 images with random weights and a class
embedding strong enough that trajectories separate the classes; label K is its unconditional (null) condition, which
the I-MMSE study needs. ``seminfo.models.NetworkAdapter`` tells the sampler what it is (its schedule, conditions and
state shape); ``seminfo.measure`` then runs the workflow's stages on it and returns the summary.

    python examples/measure_network.py --steps 20 --trajectories-per-class 8 --out measure_network

writes ``<out>/summary.nc`` and the workflow's other files (``Run.save``) and ``<out>/entropy.png``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import seminfo
from seminfo.chain.schedules import make_schedule
from seminfo.models import NetworkAdapter

CLASSES = ("circle", "square", "cross")
SHAPE = (1, 8, 8)
T = 1000


class TinyEpsNet(torch.nn.Module):
    """eps(x_t, t, c): two convolutions, a sinusoidal time embedding and a class embedding (K classes + null)."""

    def __init__(self, classes: int, channels: int = 16, class_scale: float = 3.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = torch.nn.Conv2d(SHAPE[0], channels, 3, padding=1)
        self.out = torch.nn.Conv2d(channels, SHAPE[0], 3, padding=1)
        self.time = torch.nn.Linear(channels, channels)
        self.label = torch.nn.Embedding(classes + 1, channels)
        with torch.no_grad():
            self.label.weight.mul_(class_scale)
            self.label.weight[classes].zero_()  # the null condition: no class signal

    def time_features(self, t: torch.Tensor) -> torch.Tensor:
        half = self.time.in_features // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
        angles = t.float()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.inp(x) + (self.time(self.time_features(t)) + self.label(labels))[:, :, None, None]
        return self.out(torch.nn.functional.silu(h))


def adapter(class_scale: float = 3.0) -> NetworkAdapter:
    """The network as the sampler sees it: linear schedule with T steps, the conditions, null label K."""
    net = TinyEpsNet(len(CLASSES), class_scale=class_scale).eval()
    return NetworkAdapter(net, make_schedule("linear", T), CLASSES, SHAPE, has_null=True)


def main(argv=None) -> seminfo.Run:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="reverse steps")
    parser.add_argument("--trajectories-per-class", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--immse-samples", type=int, default=64, help="x0 samples of the I-MMSE study")
    parser.add_argument("--out", type=Path, default=Path("measure_network"), help="output folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    run = seminfo.measure(adapter(), name="tiny_eps", steps=args.steps,
                          trajectories_per_class=args.trajectories_per_class, seed=args.seed,
                          sampling={"batch_size": 256, "snapshots": 4},
                          studies={"immse": {"samples": args.immse_samples, "points": 8}})
    run.save(args.out)
    seminfo.plot.entropy(run.summary).savefig(args.out / "entropy.png", dpi=100)
    h = run.summary["entropy"]
    print(f"{run.experiment}: H(c | x_t) from {float(h.isel(time=-1).mean()):.3f} bit at t = T to "
          f"{float(h.isel(time=0).mean()):.3f} bit at the end; files in {args.out}")
    return run


if __name__ == "__main__":
    main()
