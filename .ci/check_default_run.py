"""After `snakemake --cores 2` on the default config: every experiment produced its outputs, and the digits
model passes the independent quality checks of the DDPM-pipeline acceptance criteria."""

import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

config = yaml.safe_load(Path("config.yaml").read_text())
failures = []
for name, spec in config["experiments"].items():
    with xr.open_dataset(f"results/{name}/summary.nc", engine="netcdf4") as ds:
        prior = np.asarray(ds["prior"])
        h_prior = float(-(prior * np.log2(prior)).sum())
        h_T = float(ds["entropy_marginal"].isel(time=-1))
        print(f"{name}: H(c | x_T) = {h_T:.6f} bit (prior entropy {h_prior:.6f})")
        if abs(h_T - h_prior) > 0.01:
            failures.append(f"{name}: H at t = T is {h_T}, not the prior entropy {h_prior}")
        missing = [v for v in ("decision_time_median", "entropy_rate_peak_time", "mutual_information_immse",
                               "entropy_rate_rb", "entropy_rate_rb_ci_low", "entropy_marginal_rate_rb")
                   if v not in ds]
        if missing:
            failures.append(f"{name}: summary.nc lacks the studies' variables {missing}")
        if "entropy_exact" in ds:
            print(f"  max |H_MC - H_exact| = {float(abs(ds['entropy'] - ds['entropy_exact']).max()):.4f} bit")
    if spec["kind"] == "ddpm" and spec["data"]["name"] == "digits":
        q = json.loads(Path(f"results/{name}/quality.json").read_text())
        print(json.dumps(q, indent=2))
        checks = {
            "sample_label_agreement >= 0.85": q["sample_label_agreement"] >= 0.85,
            "|H(T) - log2 10| <= 0.01": abs(q["entropy_at_T_bits"] - np.log2(10)) <= 0.01,
            "mean entropy at the end <= 0.1 bit": q["mean_entropy_at_first_time_bits"] <= 0.1,
            "MAP = label for >= 95 %": q["map_equals_label_at_first_time"] >= 0.95,
        }
        failures += [f"{name}: {check}" for check, ok in checks.items() if not ok]
        if "guidance_study" in spec:
            with xr.open_dataset(f"results/{name}/guidance.nc", engine="netcdf4") as g:
                peaks = g["marginal_peak_time"].sel(interval="full")
                print(f"  guidance: marginal rate peak t/T {dict(zip(g['scale'].values.tolist(), peaks.values.tolist()))}")
                if not np.all((g["marginal_peak_time_ci_low"] <= g["marginal_peak_time"])
                              & (g["marginal_peak_time"] <= g["marginal_peak_time_ci_high"])):
                    failures.append(f"{name}: guidance.nc peak times lie outside their intervals")
    for png in Path(f"results/{name}/figures").glob("*.png"):
        if png.stat().st_size < 5000:
            failures.append(f"{png} is suspiciously small")
if failures:
    sys.exit("default run checks failed:\n  " + "\n  ".join(failures))
print("default run checks passed")
