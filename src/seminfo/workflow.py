"""Glue between Snakemake's ``script:`` directive and the stage functions.

A rule's script is two lines: it imports a stage and hands it to ``run``, which sends logging and stderr to
the rule's log file, repeats every warning on Snakemake's console (e.g. a failed health check,
``seminfo.analysis.health``), pins the thread count to the rule's ``threads``, gives a job with ``resources: gpu`` a GPU
of its own on a machine with several (``seminfo.gpu_pool``) and turns expected failures into one clear line in the log
instead of a deep traceback.
"""

from __future__ import annotations

import logging
import sys
import time

from .gpu_pool import job_gpu, requested_gpus

__all__ = ["run"]


def _expected_errors():
    from .config import ConfigError
    from .io import InputError

    errors = [ConfigError, InputError]
    try:
        from .ddpm.checkpoint import CheckpointError
        from .ddpm.data import DataError
        from .ddpm.train import TrainingDiverged

        errors += [CheckpointError, DataError, TrainingDiverged]
    except ImportError:  # pragma: no cover - torch-free installs
        pass
    return tuple(errors)


def run(smk, stage, **kwargs):
    """Run ``stage(**kwargs)`` inside a Snakemake job, logging to the job's first log file."""
    log_path = smk.log[0] if len(smk.log) else None
    handlers = [logging.FileHandler(log_path, mode="w")] if log_path else [logging.StreamHandler()]
    if log_path:  # the package's warnings also on the console Snakemake shows (errors get their own line below)
        console = logging.StreamHandler(sys.__stderr__)
        console.addFilter(lambda record: record.levelno == logging.WARNING and record.name.startswith("seminfo"))
        console.setFormatter(logging.Formatter(f"seminfo ({smk.rule}) warning: %(message)s"))
        handlers.append(console)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    if log_path:
        sys.stderr = open(log_path, "a", buffering=1)
    log = logging.getLogger("seminfo.workflow")
    threads = max(1, int(smk.threads))
    if "torch" in sys.modules:  # imported by the stage's module; jobs that need no network never import it
        sys.modules["torch"].set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)  # numpy's BLAS too, so that jobs running side by side share the cores
    except ImportError:  # pragma: no cover
        pass
    log.info("rule %s, wildcards %s, threads %s", smk.rule, dict(smk.wildcards), smk.threads)
    start = time.perf_counter()
    try:
        resources = getattr(smk, "resources", None)  # a job object without resources (a test's) asks for no GPU
        gpus = requested_gpus(resources.get("gpu") if resources is not None else None)
        with job_gpu(gpus):  # before the stage: CUDA is not initialised yet
            result = stage(**kwargs)
    except _expected_errors() as err:
        # One line in the job's log and on Snakemake's console: the file and the problem, not a traceback.
        log.error("%s: %s", type(err).__name__, err)
        message = f"seminfo ({smk.rule}): {err}"
        if log_path:
            print(message, file=sys.__stderr__, flush=True)
        raise SystemExit(message) from None
    log.info("done in %.1f s", time.perf_counter() - start)
    return result
