"""Check that two runs of the workflow produced the same summary datasets.

    python .ci/slurm/compare.py <workdir A> <workdir B> <experiment>... [--atol 1e-6]

Every experiment's results/<experiment>/summary.nc must have the same variables, coordinates, dimensions and
global attributes in both runs, and every numeric value must agree within --atol. (With the same torch thread
counts the runs agree bitwise; a different thread count changes a tiny DDPM's summary by up to ~1e-5.)
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr


def same_attr(u, v) -> bool:
    """Attribute equality, with NaN equal to NaN (e.g. an I-MMSE agreement time that is never reached)."""
    try:
        return bool(np.array_equal(np.asarray(u), np.asarray(v), equal_nan=True))
    except TypeError:  # strings and other non-numeric values
        return bool(np.array_equal(np.asarray(u), np.asarray(v)))


def differences(a: xr.Dataset, b: xr.Dataset, atol: float) -> tuple[list[str], float]:
    """What differs between ``a`` and ``b``, and the largest absolute difference of a numeric variable."""
    out, largest = [], 0.0
    if set(a.variables) != set(b.variables):
        return [f"variables differ: {sorted(set(a.variables) ^ set(b.variables))}"], largest
    keys = sorted(k for k in set(a.attrs) | set(b.attrs) if not same_attr(a.attrs.get(k), b.attrs.get(k)))
    if keys:
        out.append(f"global attributes differ: {keys}")
    for name in sorted(a.variables):
        x, y = a[name], b[name]
        if x.dims != y.dims or x.shape != y.shape:
            out.append(f"{name}: dims {x.dims}{x.shape} vs {y.dims}{y.shape}")
        elif x.dtype.kind in "fc":
            u, v = x.values, y.values
            finite = np.isfinite(u)
            if not np.array_equal(finite, np.isfinite(v)) or not np.array_equal(u[~finite], v[~finite], equal_nan=True):
                out.append(f"{name}: non-finite values (NaN, inf) differ")
                continue
            err = float(np.max(np.abs(u[finite] - v[finite]), initial=0.0))
            largest = max(largest, err)
            if err > atol:
                out.append(f"{name}: max abs difference {err:.3g} > {atol:g}")
        elif not np.array_equal(x.values, y.values):
            out.append(f"{name}: values differ")
    return out, largest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--atol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    failed = False
    for name in args.experiments:
        paths = [d / "results" / name / "summary.nc" for d in (args.a, args.b)]
        with xr.open_dataset(paths[0], engine="netcdf4") as a, xr.open_dataset(paths[1], engine="netcdf4") as b:
            diffs, largest = differences(a, b, args.atol)
        verdict = "MISMATCH" if diffs else f"equal within {args.atol:g}"
        print(f"{name}: {len(a.data_vars)} data variables, {verdict} (largest difference {largest:.3g})")
        for line in diffs:
            print(f"  {line}")
        failed |= bool(diffs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
