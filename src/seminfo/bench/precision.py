"""Command line of ``seminfo.chain.precision``: the rounding noise of a random-weight network of a published model's
size (``seminfo.bench.networks``) and the entropy bias it predicts at that model's paper scale.

    python -m seminfo.bench.precision --network cifar10_ddpm --device cuda      # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from ..chain import precision
from ..chain.diffusion import reverse_chain
from ..chain.evaluator import PRECISIONS
from ..chain.precision import noise_table, predicted_bias
from ..chain.schedules import schedule_from_scheduler_config
from .networks import NETWORKS, PAPER_SCALE, build_network

__all__ = ["main"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m seminfo.bench.precision",
                                description=precision.__doc__.split("\n\n")[0])
    p.add_argument("--network", required=True, choices=sorted(NETWORKS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--precisions", nargs="+", default=None, help="default: tf32 and bf16 on cuda, bf16 on cpu")
    p.add_argument("--samples", type=int, default=4, help="states per time")
    p.add_argument("--times", type=int, nargs="+", default=[1, 10, 50, 200, 500, 999])
    p.add_argument("--steps", type=int, default=None, help="steps of the run to predict (default: its paper scale)")
    p.add_argument("--classes", type=int, default=None, help="conditions K of that run (default: paper scale)")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    precisions = args.precisions or [q for q in PRECISIONS if q != "fp32" and (q != "tf32" or dev.type == "cuda")]
    scale = PAPER_SCALE[args.network]
    K, steps = args.classes or scale.conditions, args.steps or scale.steps
    schedule = schedule_from_scheduler_config(scale.schedule)
    net = build_network(args.network, 3, dev)
    D = int(np.prod(net.image_shape))
    table = noise_table(net, net.image_shape, schedule, args.times, precisions, dev, samples=args.samples)
    chain = reverse_chain(schedule, steps, "small")
    result = {"network": args.network, "device": str(dev), "D": D, "K": K, "steps": steps, "table": table}
    for q in precisions:
        result[q] = {"measured": predicted_bias(table, q, chain, K, D, relative=False),
                     "unit_output": predicted_bias(table, q, chain, K, D, relative=True)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
