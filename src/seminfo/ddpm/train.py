"""Training of the class-conditional ε-prediction network (Ho et al. 2020, Algorithm 1) with label dropout.

Every random draw of a step (images, timesteps, noise, dropped labels) comes from one CPU
``torch.Generator`` seeded by ``seed``; its state, the global torch RNG states (model init, dropout) and
the optimizer and EMA are saved in each training checkpoint, so a resumed run continues the exact loss
trajectory of an uninterrupted one (bitwise on CPU).
"""

from __future__ import annotations

import collections
import copy
import hashlib
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..chain.schedules import Schedule
from .checkpoint import CheckpointError, load_latest_training_state, save_model, save_training_state
from .data import ImageData
from .model import ClassConditionalUNet, count_parameters

__all__ = [
    "TRAIN_DEFAULTS",
    "TrainingDiverged",
    "resolve_train_cfg",
    "q_sample",
    "learning_rate",
    "ema_decay_at",
    "update_ema",
    "draw_batch",
    "train",
]

log = logging.getLogger(__name__)

TRAIN_DEFAULTS = {
    "steps": None,           # optimizer updates in total (required)
    "batch_size": 128,
    "lr": 2e-4,              # AdamW learning rate after warm-up
    "warmup": 100,           # steps of linear learning-rate warm-up
    "grad_clip": 1.0,        # max global gradient norm
    "ema_decay": 0.999,      # EMA decay of the weights used for sampling
    "label_dropout": 0.1,    # probability of training a sample with the null label
    "checkpoint_every": 500, # steps between training checkpoints
    "seed": 0,
    "weight_decay": 0.0,
}  # fmt: skip
LOSS_HEADER = "step\tloss\tlr\n"
_FLUSH_EVERY = 50  # steps between reading losses back from the device (each read is a sync)


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became non-finite; the last good training checkpoint is kept."""


def resolve_train_cfg(cfg: dict) -> dict:
    """Training config with defaults filled in; unknown keys or a missing ``steps`` raise ValueError."""
    unknown = sorted(set(cfg) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown training key(s) {unknown} (known: {', '.join(TRAIN_DEFAULTS)})")
    out = {**TRAIN_DEFAULTS, **cfg}
    if out["steps"] is None or int(out["steps"]) < 1:
        raise ValueError(f"train.steps must be a positive integer, got {out['steps']!r}")
    for key in ("steps", "batch_size", "warmup", "checkpoint_every", "seed"):
        out[key] = int(out[key])
    for key in ("lr", "grad_clip", "ema_decay", "label_dropout", "weight_decay"):
        out[key] = float(out[key])
    if out["batch_size"] < 1 or out["checkpoint_every"] < 1 or out["warmup"] < 0:
        raise ValueError("batch_size and checkpoint_every must be >= 1 and warmup >= 0")
    if not 0.0 <= out["label_dropout"] <= 1.0 or not 0.0 <= out["ema_decay"] < 1.0:
        raise ValueError("label_dropout must lie in [0, 1] and ema_decay in [0, 1)")
    return out


def q_sample(x0: torch.Tensor, eps: torch.Tensor, sqrt_alpha_bar: torch.Tensor, sqrt_one_minus_alpha_bar: torch.Tensor):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4); coefficients (B,)."""
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return sqrt_alpha_bar.view(shape) * x0 + sqrt_one_minus_alpha_bar.view(shape) * eps


def learning_rate(step: int, lr: float, warmup: int) -> float:
    """Learning rate of update ``step`` (1-based): linear warm-up over ``warmup`` steps, then constant."""
    return lr * min(1.0, step / warmup) if warmup > 0 else lr


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay for update ``step``: ``min(decay, (1 + step) / (10 + step))``.

    The ramp keeps the average from being dominated by the random initial weights in short runs.
    """
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for parameters; buffers are copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for target, source in zip(ema.buffers(), model.buffers(), strict=True):
        target.copy_(source)


def draw_batch(gen: torch.Generator, num_images: int, batch_size: int, T: int, image_shape, label_dropout: float):
    """One step's randomness from ``gen`` (CPU): image indices, timesteps in 1 … T, noise, dropped-label mask.

    Images are drawn with replacement, so the stream depends on nothing but the generator state.
    """
    index = torch.randint(num_images, (batch_size,), generator=gen)
    t = torch.randint(1, T + 1, (batch_size,), generator=gen)
    eps = torch.randn((batch_size, *image_shape), generator=gen)
    drop = torch.rand(batch_size, generator=gen) < label_dropout
    return index, t, eps, drop


def train(data: ImageData, arch: dict, cfg: dict, schedule: Schedule, out_path, work_dir, device=None) -> dict:
    """Train eps_theta on ``data`` with the ε-prediction MSE, resuming from ``work_dir`` if it holds a state.

    Writes ``work_dir/loss.tsv`` (step, loss, lr), training checkpoints in ``work_dir/checkpoints`` and,
    at the end, the EMA model to ``out_path`` (.safetensors + .json). Returns summary statistics.
    Raises TrainingDiverged on a non-finite loss or gradient norm. Seeds the global torch RNG with ``seed``.
    """
    cfg = resolve_train_cfg(cfg)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = work_dir / "checkpoints"
    loss_path = work_dir / "loss.tsv"

    # Seeds the global RNG, which draws the initial weights and the dropout masks.
    torch.manual_seed(cfg["seed"])
    model = ClassConditionalUNet(arch, data.image_shape, data.num_classes).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = _adamw(model, cfg, device)
    gen = torch.Generator().manual_seed(cfg["seed"])
    run = _run_identity(data, model, cfg, schedule)

    state = load_latest_training_state(checkpoints, model, ema, optimizer)
    start = 0
    if state is not None:
        start, rng, extra = state
        if extra.get("run") != run:
            differs = sorted(k for k in run if extra.get("run", {}).get(k) != run[k])
            raise CheckpointError(
                f"{checkpoints} holds a training state of a different run (differs in {differs}); "
                "delete it or use another work_dir"
            )
        if start > cfg["steps"]:
            raise CheckpointError(f"{checkpoints} holds a training state at step {start}, past steps={cfg['steps']}")
        _set_rng_state(rng, gen, device)
        log.info("resuming from step %d of %d (%s)", start, cfg["steps"], checkpoints)
    recent = collections.deque(_truncate_losses(loss_path, start), maxlen=100)

    images = data.images.to(device)
    labels = data.labels.to(device)
    sqrt_ab = torch.as_tensor(np.sqrt(schedule.alpha_bar), dtype=torch.float32, device=device)
    sqrt_1m_ab = torch.as_tensor(np.sqrt(1.0 - schedule.alpha_bar), dtype=torch.float32, device=device)
    log.info(
        "training %s parameters on %s: %d images %s, %d classes, %d steps of batch %d",
        f"{count_parameters(model):,}", device, len(labels), data.image_shape, data.num_classes,
        cfg["steps"], cfg["batch_size"],
    )  # fmt: skip

    model.train()
    pending = []  # (step, lr, loss, grad norm) not yet read back from the device
    saved = start
    began = time.perf_counter()
    with (
        open(loss_path, "a") as loss_file,
        tqdm(total=cfg["steps"], initial=start, desc="train", unit="step", mininterval=5.0, file=sys.stderr) as bar,
    ):
        for step in range(start + 1, cfg["steps"] + 1):
            lr = learning_rate(step, cfg["lr"], cfg["warmup"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            index, t, eps, drop = draw_batch(
                gen, len(labels), cfg["batch_size"], schedule.T, data.image_shape, cfg["label_dropout"]
            )
            index, t, eps, drop = (v.to(device) for v in (index, t, eps, drop))
            y = torch.where(drop, model.null_label, labels[index])
            x_t = q_sample(images[index], eps, sqrt_ab[t], sqrt_1m_ab[t])
            loss = torch.nn.functional.mse_loss(model(x_t, t, y), eps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            optimizer.step()
            update_ema(ema, model, ema_decay_at(step, cfg["ema_decay"]))
            pending.append((step, lr, loss.detach(), grad_norm.detach()))
            bar.update(1)

            checkpoint_now = step % cfg["checkpoint_every"] == 0 or step == cfg["steps"]
            if checkpoint_now or len(pending) >= _FLUSH_EVERY:
                # Read losses back before saving, so a diverged model is never checkpointed.
                bad = _flush_losses(pending, loss_file, recent)
                if bad is not None:
                    kept = (
                        f"the last good training state is step {saved} in {checkpoints}"
                        if saved
                        else "no training state was saved"
                    )
                    raise TrainingDiverged(
                        f"non-finite loss {bad[1]} or gradient norm {bad[2]} at step {bad[0]}; {kept}"
                    )
                pending.clear()
                bar.set_postfix(loss=f"{np.mean(recent):.4f}", refresh=False)
            if checkpoint_now:
                save_training_state(checkpoints, step, model, ema, optimizer, _get_rng_state(gen, device), {"run": run})
                saved = step
    elapsed = time.perf_counter() - began

    done = cfg["steps"] - start
    images_per_s = done * cfg["batch_size"] / elapsed if done else float("nan")
    meta = {
        "train": cfg,
        "schedule": {"name": schedule.name, "T": schedule.T},
        "steps": cfg["steps"],
        "class_names": list(data.class_names),
    }
    save_model(out_path, ema, meta=meta)
    final_loss = float(np.mean(recent)) if recent else float("nan")
    log.info(
        "trained steps %d-%d in %.1f s (%.0f images/s, %.2f ms/step); mean loss of the last %d steps %.4f; wrote %s",
        start + 1, cfg["steps"], elapsed, images_per_s, 1e3 * elapsed / max(done, 1), len(recent), final_loss, out_path,
    )  # fmt: skip
    return {
        "steps": cfg["steps"],
        "resumed_from": start,
        "final_loss": final_loss,
        "images_per_s": images_per_s,
        "seconds": elapsed,
        "parameters": count_parameters(model),
    }


def _adamw(model: torch.nn.Module, cfg: dict, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the fused kernel where the device has one, else the multi-tensor (foreach) one."""
    kwargs = {"lr": cfg["lr"], "weight_decay": cfg["weight_decay"]}
    try:
        return torch.optim.AdamW(model.parameters(), fused=True, **kwargs)
    except RuntimeError:
        log.info("no fused AdamW on %s; using foreach", device)
        return torch.optim.AdamW(model.parameters(), foreach=True, **kwargs)


def _run_identity(data: ImageData, model: ClassConditionalUNet, cfg: dict, schedule: Schedule) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint (all but the step count)."""
    digest = hashlib.sha256()
    digest.update(data.images.cpu().numpy().tobytes())
    digest.update(data.labels.cpu().numpy().tobytes())
    return {
        "train": {k: v for k, v in cfg.items() if k != "steps"},
        "arch": model.arch,
        "num_classes": model.num_classes,
        "image_shape": list(model.image_shape),
        "schedule": {"name": schedule.name, "sha256": hashlib.sha256(schedule.alpha_bar.tobytes()).hexdigest()},
        "data_sha256": digest.hexdigest(),
    }


def _get_rng_state(gen: torch.Generator, device: torch.device) -> dict:
    state = {"data": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, gen: torch.Generator, device: torch.device) -> None:
    gen.set_state(state["data"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _truncate_losses(path: Path, step: int) -> list[float]:
    """Keep the rows of ``loss.tsv`` up to ``step`` (later ones are from an interrupted run); return their losses."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines()[1:]:
            fields = line.split("\t")
            if len(fields) == 3 and fields[0].isdigit() and int(fields[0]) <= step:
                rows.append(line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(LOSS_HEADER + "".join(rows))
    tmp.replace(path)
    return [float(row.split("\t")[1]) for row in rows]


def _flush_losses(pending: list, loss_file, recent: collections.deque):
    """Append the pending rows to the loss file up to the first non-finite one; return that (step, loss, norm)."""
    values = torch.stack([torch.stack([loss, norm]) for _, _, loss, norm in pending]).cpu().tolist()
    try:
        for (step, lr, _, _), (loss, norm) in zip(pending, values, strict=True):
            loss_file.write(f"{step}\t{loss!r}\t{lr!r}\n")
            if not (math.isfinite(loss) and math.isfinite(norm)):
                return step, loss, norm
            recent.append(loss)
        return None
    finally:
        loss_file.flush()
