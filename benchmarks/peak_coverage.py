"""Coverage of the entropy-rate peak-time intervals on the default mixtures, where the true peak times are known.

    python benchmarks/peak_coverage.py [--experiments gmm_hierarchical ...] [--replicates 20] [--out FILE]

Each replicate measures a default Gaussian-mixture experiment of config.yaml through ``seminfo.measure`` (the
workflow's stages, at the config's sizes, with sampling seeds 1000, 1001, …) and records, for every class and every
binary decision, whether the 95 % bootstrap interval of its entropy-rate peak time (``entropy_rate_peak_time_ci_*``,
``partition_rate_peak_time_ci_*`` of summary.nc) holds the exact peak time (``*_peak_time_exact``, the argmax of the
unsmoothed exact rate on the same grid), and the interval's width. One JSON line per replicate goes to ``--out``;
the last line printed is the coverage per experiment and kind, with a 95 % Wilson interval of the coverage itself.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion."""
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def replicate(spec: dict, seed: int) -> dict:
    """One measurement: per class and per decision, (exact peak, interval low, interval high)."""
    import seminfo

    s = seminfo.measure(spec["mixture"], schedule=spec["schedule"], sampling=spec["sampling"] | {"seed": seed},
                        analysis=spec.get("analysis"), partitions=spec.get("partitions"),
                        studies={"immse": {"enable": False}}, progress=False).summary
    out = {}
    for kind, prefix in (("class", "entropy_rate_peak_time"), ("decision", "partition_rate_peak_time")):
        if f"{prefix}_exact" in s and f"{prefix}_ci_low" in s:
            out[kind] = np.stack([s[f"{prefix}_exact"].values, s[f"{prefix}_ci_low"].values,
                                  s[f"{prefix}_ci_high"].values], 1).tolist()
    return out


def main(argv=None) -> dict:
    from seminfo.config import load_config
    from seminfo.plan import SCHEMA_PATH

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiments", nargs="+", default=["gmm_asymmetric", "gmm_hierarchical"])
    p.add_argument("--replicates", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=1000)
    p.add_argument("--out", type=Path, default=None, help="JSON lines of every replicate (appended)")
    args = p.parse_args(argv)
    config = load_config(REPO / "config.yaml", SCHEMA_PATH)
    totals = {}
    for name in args.experiments:
        spec = config["experiments"][name]
        for seed in range(args.first_seed, args.first_seed + args.replicates):
            rows = replicate(spec, seed)
            if args.out is not None:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps({"experiment": name, "seed": seed} | rows) + "\n")
            for kind, values in rows.items():
                t = totals.setdefault(f"{name}/{kind}", {"hits": 0, "n": 0, "width": []})
                for exact, lo, hi in values:
                    t["hits"] += int(lo <= exact <= hi)
                    t["n"] += 1
                    t["width"].append(hi - lo)
    summary = {key: {"coverage": t["hits"] / t["n"], "coverage_95ci": wilson(t["hits"], t["n"]), "intervals": t["n"],
                     "median_width": float(np.median(t["width"]))} for key, t in totals.items()}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
