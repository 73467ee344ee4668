"""A GPU of its own for every GPU job of a local run: a pool of lock files, one per visible device.

Snakemake's local scheduler counts GPUs (``--resources gpu=N`` lets N jobs with ``resources: gpu=1`` run at once)
but does not say which device a job gets (snakemake/snakemake#281, open in Snakemake 9), so every job would take
``cuda``, device 0. Here a GPU job takes the first device whose lock file it can lock (``fcntl.flock``, exclusive,
non-blocking), waits while every device is taken, and holds the lock for its lifetime. The kernel releases a flock
when the last descriptor of the locked file closes, so a device comes free however its job ends: it returns,
raises, is interrupted (Ctrl-C) or killed (SIGKILL, out of memory). The job's ``CUDA_VISIBLE_DEVICES`` is set to
its device before torch initialises CUDA, so ``cuda`` is that device to torch and to every library the job loads.

The pool is the devices the job can see: the entries of ``CUDA_VISIBLE_DEVICES`` when it is set, else the GPUs that
``nvidia-smi -L`` lists. With fewer than two there is nothing to choose and nothing changes: CPU-only machines, a
one-GPU machine, a SLURM job that the scheduler gave one GPU, or ``CUDA_VISIBLE_DEVICES=<one device>`` set by hand.
The lock files live in ``.snakemake/gpu_locks/`` of the working directory and are named by host (and SLURM job,
whose device numbers are its own), so jobs on other nodes that share the file system never contend with them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

__all__ = ["LOCK_DIR", "requested_gpus", "nvidia_gpu_count", "visible_devices", "lock_path", "try_lock", "hold_device",
           "job_gpu"]

LOCK_DIR = Path(".snakemake") / "gpu_locks"  # relative to the working directory, where Snakemake runs its jobs
POLL_SECONDS = 1.0  # between two rounds of tries while every device is taken


def requested_gpus(value) -> int:
    """The GPU count of a job's ``resources.gpu``: a number, or "<model>:<number>" as the SLURM executor also takes;
    0 where unset."""
    if value is None or value == "":
        return 0
    try:
        return int(str(value).rpartition(":")[2])
    except ValueError:
        raise ValueError(f"resources.gpu = {value!r} is not a GPU count (a number or <model>:<number>)") from None


def nvidia_gpu_count() -> int:
    """The GPUs ``nvidia-smi -L`` lists (0 where it is missing or fails); asks the driver in another process, so this
    one's CUDA stays uninitialised."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def visible_devices(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs a process may use, as ``CUDA_VISIBLE_DEVICES`` entries: the variable's entries where it is set (set
    but empty: none), else "0" … "n-1" for the n GPUs of the machine (``nvidia_gpu_count``)."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    return [str(i) for i in range(nvidia_gpu_count())]


def lock_path(lock_dir, device: str, environ: Mapping[str, str] = os.environ) -> Path:
    """The lock file of ``device`` on this host (in this SLURM job, if any), its name made safe for a file."""
    scope = socket.gethostname() + (f"-slurm{environ['SLURM_JOB_ID']}" if environ.get("SLURM_JOB_ID") else "")
    return Path(lock_dir) / re.sub(r"[^A-Za-z0-9._-]", "_", f"{scope}.gpu{device}.lock")


def try_lock(path) -> int | None:
    """An open descriptor of ``path`` (created if missing) that holds an exclusive flock on it, or None while another
    open file holds the lock. Closing the descriptor releases the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as err:
        os.close(fd)
        raise OSError(err.errno, f"cannot lock {path} ({err.strerror}): the GPU pool needs a file system with flock; "
                                 "run from a local directory, or set CUDA_VISIBLE_DEVICES to one device") from None
    return fd


@contextmanager
def hold_device(devices: Sequence[str], lock_dir=LOCK_DIR, environ: Mapping[str, str] = os.environ,
                poll: float | None = None) -> Iterator[str]:
    """Hold one of ``devices`` for the with-block: the first whose lock is free, retrying every ``poll`` seconds
    (default ``POLL_SECONDS``) while all are held."""
    if not devices:
        raise ValueError("hold_device needs at least one device")
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    paths = [(device, lock_path(lock_dir, device, environ)) for device in devices]
    waiting_since = None
    while True:
        held = next(((device, fd) for device, path in paths if (fd := try_lock(path)) is not None), None)
        if held is not None:
            break
        if waiting_since is None:
            waiting_since = time.monotonic()
            log.info("all %d GPUs (%s) are held by other jobs; waiting for one", len(devices), ",".join(devices))
        time.sleep(POLL_SECONDS if poll is None else poll)
    device, fd = held
    if waiting_since is not None:
        log.info("waited %.1f s for a GPU", time.monotonic() - waiting_since)
    try:
        yield device
    finally:
        os.close(fd)


@contextmanager
def job_gpu(gpus: int, lock_dir=LOCK_DIR) -> Iterator[str | None]:
    """For the with-block, give a job that asked for ``gpus`` GPUs (its ``resources.gpu``; the stages use one) a
    device of its own from the pool of visible devices and point ``CUDA_VISIBLE_DEVICES`` at it; yields the device,
    or None where there is nothing to choose (no GPU asked for, fewer than two visible) and nothing is changed."""
    devices = visible_devices() if gpus > 0 else []
    if len(devices) < 2:
        yield None
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised before the job chose its GPU, so CUDA_VISIBLE_DEVICES would be "
                           "ignored: nothing may touch CUDA before seminfo.workflow.run")
    with hold_device(devices, lock_dir) as device:
        before = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = device
        log.info("GPU %s of %s (CUDA_VISIBLE_DEVICES=%s; lock %s), held until the job ends", device,
                 ",".join(devices), device, lock_path(lock_dir, device))
        try:
            yield device
        finally:
            if before is None:
                del os.environ["CUDA_VISIBLE_DEVICES"]
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before
