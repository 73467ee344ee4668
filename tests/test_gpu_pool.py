"""The GPU pool of local runs (seminfo.gpu_pool) on a simulated device list: which devices it sees, that no two
holders share one, that a waiting job gets the device of a job that dies (SIGKILL), and that the job wrapper
(seminfo.workflow.run) points CUDA_VISIBLE_DEVICES at the job's device before its stage runs."""

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from itertools import combinations
from pathlib import Path
from types import SimpleNamespace

import pytest

from seminfo import gpu_pool
from seminfo.gpu_pool import hold_device, job_gpu, lock_path, requested_gpus, try_lock, visible_devices
from seminfo.workflow import run

SRC = Path(__file__).resolve().parents[1] / "src"

# A GPU job as Snakemake runs it: a process that calls seminfo.workflow.run with resources.gpu = 1; its stage writes
# the device it was given and when it held it to <name>.json, after printing the device (and, before run, "ready").
JOB = """
import json, os, sys, time
from types import SimpleNamespace
import seminfo.gpu_pool
from seminfo.workflow import run

seminfo.gpu_pool.POLL_SECONDS = 0.02
name, hold = sys.argv[1], float(sys.argv[2])

def stage():
    device, start = os.environ["CUDA_VISIBLE_DEVICES"], time.time()
    print(device, flush=True)
    time.sleep(hold)
    with open(name + ".json", "w") as f:
        json.dump({"device": device, "start": start, "end": time.time()}, f)

print("ready", flush=True)
sys.stdin.readline()
run(SimpleNamespace(log=[name + ".log"], threads=1, rule="job", wildcards={}, resources={"gpu": 1}), stage)
"""


@pytest.fixture
def two_gpus(tmp_path, monkeypatch):
    """A working directory on a machine that appears to have GPUs 0 and 1, outside SLURM."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    (tmp_path / "job.py").write_text(JOB)
    return tmp_path


def start_job(workdir, name, hold):
    """A job process, started and ready (imports done), with a queue of the lines it prints from then on."""
    env = dict(os.environ, PYTHONPATH=str(SRC), CUDA_VISIBLE_DEVICES="0,1")
    proc = subprocess.Popen([sys.executable, "job.py", name, str(hold)], cwd=workdir, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    proc.lines = queue.Queue()
    threading.Thread(target=lambda: [proc.lines.put(line.strip()) for line in proc.stdout], daemon=True).start()
    return proc


def go(proc):
    proc.stdin.write("\n")
    proc.stdin.flush()


def device_line(proc, timeout=20.0):
    """The device a job prints once it holds one (None if it does not within ``timeout`` seconds)."""
    try:
        return proc.lines.get(timeout=timeout)
    except queue.Empty:
        return None


def lock_files(workdir):
    return [lock_path(workdir / gpu_pool.LOCK_DIR, d) for d in ("0", "1")]


def test_visible_devices_and_requested_counts(monkeypatch):
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "0,1"}) == ["0", "1"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": " 2, 3 ,"}) == ["2", "3"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-8a1f,MIG-77c0"}) == ["GPU-8a1f", "MIG-77c0"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []  # set but empty: CUDA sees no device
    monkeypatch.setattr(gpu_pool, "nvidia_gpu_count", lambda: 4)
    assert visible_devices({}) == ["0", "1", "2", "3"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "5"}) == ["5"]  # the variable wins over the driver's count
    assert requested_gpus(None) == requested_gpus("") == 0
    assert requested_gpus(1) == requested_gpus("1") == 1 and requested_gpus("a100:2") == 2
    with pytest.raises(ValueError, match="not a GPU count"):
        requested_gpus("a100")


def test_lock_files_are_per_host_and_slurm_job(tmp_path):
    local = lock_path(tmp_path, "0", {})
    in_job = lock_path(tmp_path, "0", {"SLURM_JOB_ID": "4711"})
    assert local != in_job and "slurm4711" in in_job.name and local.parent == tmp_path
    assert "/" not in lock_path(tmp_path, "MIG-a/b", {}).name


def test_each_device_has_one_holder_and_the_next_waits(tmp_path):
    with hold_device(["0", "1"], tmp_path) as a, hold_device(["0", "1"], tmp_path) as b:
        assert (a, b) == ("0", "1")
        assert all(try_lock(p) is None for p in (lock_path(tmp_path, "0"), lock_path(tmp_path, "1")))
        got = []
        waiter = threading.Thread(target=lambda: got.append(_hold_briefly(tmp_path)), daemon=True)
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive() and not got  # both taken: it waits
    waiter.join(5)
    assert got == ["0"]
    with hold_device(["0", "1"], tmp_path) as again:  # released on leaving the block
        assert again == "0"
    with pytest.raises(ValueError, match="at least one"):
        with hold_device([], tmp_path):
            pass


def _hold_briefly(lock_dir):
    with hold_device(["0", "1"], lock_dir, poll=0.02) as device:
        return device


def test_job_gpu_points_cuda_at_a_free_device_and_restores_it(two_gpus):
    with hold_device(["0", "1"], gpu_pool.LOCK_DIR) as other:  # another job of the run holds device 0
        with job_gpu(1) as mine:
            assert (other, mine) == ("0", "1") and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
            with job_gpu(1) as inner:  # what the job sees now is its one device: nothing more to choose
                assert inner is None and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert sorted(p.name for p in (two_gpus / gpu_pool.LOCK_DIR).iterdir()) == sorted(
        p.name for p in lock_files(two_gpus))


@pytest.mark.parametrize("env, gpus", [
    ({"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_ID": "7"}, 1),  # a SLURM job that the scheduler gave one GPU
    ({"CUDA_VISIBLE_DEVICES": "3"}, 1),  # one device chosen by hand
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, 0),  # a job that asks for no GPU
    ({}, 1),  # no NVIDIA driver: a CPU-only machine
])
def test_nothing_changes_without_a_choice(tmp_path, monkeypatch, env, gpus):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpu_pool, "nvidia_gpu_count", lambda: 0)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = dict(os.environ)
    with job_gpu(gpus) as device:
        assert device is None and dict(os.environ) == before
    assert not (tmp_path / gpu_pool.LOCK_DIR).exists()


def test_run_gives_the_stage_its_device_and_logs_it(two_gpus, monkeypatch):
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # run() sends stderr and logging to the job's log: undo after
    monkeypatch.setattr(logging.getLogger(), "handlers", list(logging.getLogger().handlers))
    seen = []
    smk = SimpleNamespace(log=[str(two_gpus / "job.log")], threads=1, rule="ddpm_sample", wildcards={},
                          resources={"gpu": 1})
    run(smk, lambda: seen.append(os.environ["CUDA_VISIBLE_DEVICES"]))
    assert seen == ["0"] and "GPU 0 of 0,1 (CUDA_VISIBLE_DEVICES=0" in (two_gpus / "job.log").read_text()
    cpu_job = SimpleNamespace(log=[str(two_gpus / "cpu.log")], threads=1, rule="aggregate", wildcards={},
                              resources={})
    run(cpu_job, lambda: seen.append(os.environ["CUDA_VISIBLE_DEVICES"]))
    assert seen[-1] == "0,1" and "GPU" not in (two_gpus / "cpu.log").read_text()


def test_four_concurrent_jobs_on_two_devices_never_share_one(two_gpus):
    jobs = [start_job(two_gpus, f"job{i}", hold=1.0) for i in range(4)]
    for proc in jobs:
        go(proc)
    for proc in jobs:
        assert proc.wait(60) == 0, proc.stderr.read()
    held = [json.loads((two_gpus / f"job{i}.json").read_text()) for i in range(4)]
    assert {h["device"] for h in held} == {"0", "1"}
    for a, b in combinations(held, 2):
        overlap = min(a["end"], b["end"]) > max(a["start"], b["start"])
        assert not (overlap and a["device"] == b["device"]), (a, b)
    # and the pool does run two at once: the pair that started first held different devices side by side
    first = sorted(held, key=lambda h: h["start"])[:2]
    assert first[0]["device"] != first[1]["device"] and first[1]["start"] < first[0]["end"]
    for i, h in enumerate(held):
        assert f"GPU {h['device']} of 0,1" in (two_gpus / f"job{i}.log").read_text()


def test_a_killed_job_gives_its_device_back(two_gpus):
    holders = [start_job(two_gpus, f"holder{i}", hold=120) for i in range(2)]
    devices = []
    for proc in holders:
        go(proc)
        devices.append(device_line(proc))
    waiter = start_job(two_gpus, "waiter", hold=0.1)
    try:
        assert sorted(devices) == ["0", "1"]
        assert all(try_lock(p) is None for p in lock_files(two_gpus))  # both held
        go(waiter)
        assert device_line(waiter, timeout=1.0) is None  # nothing free: it waits
        holders[1].send_signal(signal.SIGKILL)
        holders[1].wait(10)
        assert device_line(waiter) == devices[1]  # the dead job's device, freed by the kernel
        assert waiter.wait(30) == 0, waiter.stderr.read()
        holders[0].send_signal(signal.SIGKILL)
        holders[0].wait(10)
        fds = [try_lock(p) for p in lock_files(two_gpus)]  # every device free again
        assert all(fd is not None for fd in fds)
        for fd in fds:
            os.close(fd)
    finally:
        for proc in holders + [waiter]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_a_job_whose_cuda_started_already_is_refused(two_gpus, monkeypatch):
    """CUDA reads CUDA_VISIBLE_DEVICES once, when it starts: a device chosen after that would not be the one used."""
    started = SimpleNamespace(cuda=SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", started)
    with pytest.raises(RuntimeError, match="CUDA was initialised before"):
        with job_gpu(1):
            pass
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
