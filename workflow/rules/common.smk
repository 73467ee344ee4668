# Config validation and target helpers. Validation runs when the workflow is parsed, so a bad config
# stops every command (including dry runs) with one message before any job is scheduled.
import os
import re
import sys

from seminfo import plan
from seminfo.config import ConfigError, experiment_hash, load_schema, validate_config
from seminfo.models import check_sources, has_null_condition, is_pretrained, model_source
from seminfo.models.hub import hub_downloads, is_hub, record_path
from seminfo.plotting.captions import caption_numbers
from seminfo.stages.precision import check_own_precision

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")

try:
    config = validate_config(config, load_schema(SCHEMA))
    check_sources(config)  # pretrained models: their folders, from the JSON files (no weights loaded)
    check_own_precision(config)  # a reduced precision's predicted entropy bias (pretrained: at sampling)
except ConfigError as err:
    sys.stderr.write(f"seminfo: invalid configuration: {err}\n")
    raise SystemExit(1)

EXPERIMENTS = config["experiments"]
RESULTS = "results"
# Models named by their hub id: validate_config has pointed their model.path at <models_dir>/<org>/<name>/<revision>;
# rule model_download fills those folders (by key <org>/<name>/<revision>).
MODELS_DIR = os.path.normpath(config["models_dir"])
HUB_DOWNLOADS = hub_downloads(config)
# Threads of a job that uses every core it is given. Snakemake caps a rule's threads at --cores (and the profiles
# set them per rule), so this needs no core count: `snakemake -n` and `--report` work without --cores.
ALL_CORES = 1024


def gpu_job_threads(wildcards=None):
    """Threads of a job that runs a network (resources: gpu=1): every core, or with --resources gpu=N (N > 1) an
    equal share, cores // N, so that N of them run side by side (each on a GPU of its own, seminfo.gpu_pool); with
    every core each, Snakemake would run them one at a time whatever N. A profile's set-threads overrides it."""
    gpus = workflow.global_resources.get("gpu").value
    cores = workflow.global_resources.get("_cores").value
    if not isinstance(gpus, int) or gpus < 2 or not isinstance(cores, int):
        return ALL_CORES
    return max(1, cores // gpus)


def spec(experiment):
    return EXPERIMENTS[experiment]


def core_spec(experiment):
    """What sampling depends on: changing analysis or plotting options must not resample (seminfo.plan)."""
    return plan.core_spec(spec(experiment))


def train_spec(experiment):
    """What training depends on: changing sampling options must not retrain (seminfo.plan)."""
    return plan.train_spec(spec(experiment))


def analysis_spec(experiment):
    """What the posterior and aggregation stages depend on, plotting options excluded (seminfo.plan)."""
    return plan.analysis_spec(spec(experiment))


def experiments_of(kind):
    return [name for name, s in EXPERIMENTS.items() if s["kind"] == kind]


def own_experiments():
    """Network experiments of the project's own UNet (trained by ddpm_train)."""
    return [name for name in experiments_of("ddpm") if not is_pretrained(spec(name))]


def pretrained_experiments():
    """Network experiments of a pretrained model loaded from its folder (model.source: diffusers, dit, …)."""
    return [name for name in experiments_of("ddpm") if is_pretrained(spec(name))]


def digits_experiments():
    """DDPM experiments on the bundled digits with full tracking: they get an independent sample-quality check."""
    return [name for name in own_experiments() if spec(name)["data"]["name"] == "digits"
            and spec(name)["sampling"].get("tracking", "full") == "full"]


def model_file(w):
    """What sampling depends on: the trained checkpoint (own), or the checked adapter.json (pretrained)."""
    if is_pretrained(spec(w.experiment)):
        return f"{RESULTS}/{w.experiment}/model/adapter.json"
    return f"{RESULTS}/{w.experiment}/model/model.safetensors"


def model_folder_stat(w):
    """A cheap fingerprint of the model's files (names, sizes, modification times) as a param: Snakemake reruns
    model_check when it changes (the content fingerprint is written by the job into adapter.json)."""
    import hashlib
    import os

    m = spec(w.experiment)["model"]
    if is_hub(spec(w.experiment)):  # the folder may not be there yet: its download record stands for it
        return f"{m['hub']}@{m['revision']}"
    digest = hashlib.sha256()
    for f in model_folder_files(w):
        st = os.stat(f)
        digest.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def model_folder_files(w):
    """Every file of a pretrained model's folder (or its one file) and a python entry's file: changing any of them
    reruns model_check, and through adapter.json the sampling. A model named by its hub id: its download record
    (rule model_download's output)."""
    from pathlib import Path

    m = spec(w.experiment)["model"]
    if is_hub(spec(w.experiment)):
        return [str(record_path(m["path"]))]
    root = Path(m["path"]).expanduser()
    files = sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.is_dir() else [str(root)]
    where = m.get("entry", "").rpartition(":")[0]
    if where.endswith(".py"):
        files.append(str(Path(where).expanduser()))
    return files


def report_numbers(w, input):
    """The experiment's key numbers for the report's captions (seminfo.plotting.captions), read from its summary.nc.
    A function of the job's input, so Snakemake does not compare it between runs: it never reruns a job, and the
    report, made after the run, shows the numbers of the run's summary.nc."""
    return caption_numbers(f"{RESULTS}/{w.experiment}/summary.nc")


def figures(experiment):
    """The figure files of one experiment (which ones apply depends on its kind and partitions)."""
    return [f"{RESULTS}/{experiment}/figures/{name}.png" for name in plan.figure_names(spec(experiment))]


def all_targets():
    """Every output of the experiments named by ``run:`` (default: all experiments)."""
    out = []
    for name in config.get("run", EXPERIMENTS):
        out.append(f"{RESULTS}/{name}/summary.nc")
        if spec(name)["kind"] == "ddpm":
            out.append(f"{RESULTS}/{name}/trajectories.nc")
        if name in digits_experiments():
            out.append(f"{RESULTS}/{name}/quality.json")
        out += figures(name)
    return out + extra_targets()


def shard_files(experiment, stage):
    """Per-shard files of a DDPM experiment, e.g. results/<experiment>/shards/sample_<i>.nc."""
    shards = spec(experiment)["sampling"]["shards"]
    return [f"{RESULTS}/{experiment}/shards/{stage}_{i}.nc" for i in range(shards)]


def health_inputs(w):
    """What the health checks of a network run read (seminfo.stages.health): the profiles, the sample shards, the
    I-MMSE study's file when it runs, and the independent classifier's quality.json where there is one."""
    inputs = {"profiles": f"{RESULTS}/{w.experiment}/profiles.nc", "samples": shard_files(w.experiment, "sample")}
    if w.experiment in immse_experiments():  # defined in extras_common.smk, called when the job is planned
        inputs["immse"] = f"{RESULTS}/{w.experiment}/immse.nc"
    if w.experiment in digits_experiments():
        inputs["quality"] = f"{RESULTS}/{w.experiment}/quality.json"
    return inputs


def posterior_files(w):
    if spec(w.experiment)["kind"] == "gmm":
        return [f"{RESULTS}/{w.experiment}/posterior.nc"]
    return shard_files(w.experiment, "posterior")


wildcard_constraints:
    experiment="|".join(EXPERIMENTS) or "^$",
    shard=r"\d+",
