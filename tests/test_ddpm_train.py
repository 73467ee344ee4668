import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import seminfo.ddpm.train as train_mod
from seminfo.chain.schedules import make_schedule
from seminfo.ddpm.checkpoint import CheckpointError, load_latest_training_state, load_model
from seminfo.ddpm.data import load_images
from seminfo.ddpm.model import ClassConditionalUNet, resolve_arch
from seminfo.ddpm.train import TrainingDiverged, learning_rate, q_sample, resolve_train_cfg, train

ARCH = resolve_arch({"preset": "digits", "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8})
SCHEDULE = make_schedule("linear", 1000)


@pytest.fixture(scope="module")
def digits():
    return load_images({"name": "digits", "classes": [0, 1, 7], "limit_per_class": 40})


def losses(work_dir):
    rows = (work_dir / "loss.tsv").read_text().splitlines()
    assert rows[0] == "step\tloss\tlr"
    return [row.split("\t") for row in rows[1:]]


class Interrupted(Exception):
    pass


def interrupt(out):
    raise Interrupted()


def patch_forward(monkeypatch, at_call, action):
    """Make the trained network apply ``action`` to its output on its ``at_call``-th forward call."""
    calls = [0]

    class Patched(ClassConditionalUNet):
        def forward(self, x, t, labels):
            calls[0] += 1
            out = super().forward(x, t, labels)
            return action(out) if calls[0] == at_call else out

    monkeypatch.setattr(train_mod, "ClassConditionalUNet", Patched)


def test_loss_decreases_on_digits(digits, tmp_path):
    cfg = {"steps": 150, "batch_size": 32, "lr": 1e-3, "warmup": 10, "checkpoint_every": 1000}
    summary = train(digits, ARCH, cfg, SCHEDULE, tmp_path / "model.safetensors", tmp_path / "work")
    values = [float(row[1]) for row in losses(tmp_path / "work")]
    assert len(values) == 150
    assert np.mean(values[-20:]) < 0.7 * np.mean(values[:20])
    assert summary["steps"] == 150 and summary["resumed_from"] == 0 and summary["images_per_s"] > 0

    model, meta = load_model(tmp_path / "model.safetensors", expect_num_classes=3)
    assert meta["steps"] == 150 and meta["schedule"] == {"name": "linear", "T": 1000}
    assert meta["train"]["batch_size"] == 32 and meta["train"]["label_dropout"] == 0.1
    assert meta["class_names"] == ["0", "1", "7"]


def test_resumed_run_continues_the_exact_loss_trajectory(digits, tmp_path, monkeypatch):
    arch = {**ARCH, "dropout": 0.1}  # dropout draws from the global RNG, which must be restored too
    cfg = {"steps": 20, "batch_size": 16, "lr": 1e-3, "warmup": 5, "checkpoint_every": 5}
    train(digits, arch, cfg, SCHEDULE, tmp_path / "a.safetensors", tmp_path / "a")

    with monkeypatch.context() as m:
        patch_forward(m, 13, interrupt)
        with pytest.raises(Interrupted):
            train(digits, arch, cfg, SCHEDULE, tmp_path / "b.safetensors", tmp_path / "b")
    assert len(losses(tmp_path / "b")) == 10  # steps 11 and 12 were not yet flushed
    summary = train(digits, arch, cfg, SCHEDULE, tmp_path / "b.safetensors", tmp_path / "b")

    assert summary["resumed_from"] == 10
    assert (tmp_path / "a" / "loss.tsv").read_bytes() == (tmp_path / "b" / "loss.tsv").read_bytes()
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_extending_a_finished_run_resumes_from_its_last_step(digits, tmp_path):
    cfg = {"steps": 6, "batch_size": 8, "checkpoint_every": 4}
    train(digits, ARCH, cfg, SCHEDULE, tmp_path / "a.safetensors", tmp_path / "a")
    summary = train(digits, ARCH, {**cfg, "steps": 9}, SCHEDULE, tmp_path / "a.safetensors", tmp_path / "a")
    train(digits, ARCH, {**cfg, "steps": 9}, SCHEDULE, tmp_path / "b.safetensors", tmp_path / "b")
    assert summary["resumed_from"] == 6
    assert (tmp_path / "a" / "loss.tsv").read_bytes() == (tmp_path / "b" / "loss.tsv").read_bytes()
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["step_00000008", "step_00000009"]


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(digits, tmp_path, monkeypatch):
    cfg = {"steps": 20, "batch_size": 8, "checkpoint_every": 5}
    patch_forward(monkeypatch, 13, lambda out: out * float("nan"))
    with pytest.raises(
        TrainingDiverged, match="non-finite loss nan .* at step 13; the last good training state is step 10"
    ):
        train(digits, ARCH, cfg, SCHEDULE, tmp_path / "model.safetensors", tmp_path / "work")
    assert not (tmp_path / "model.safetensors").exists()
    assert losses(tmp_path / "work")[-1][:2] == ["13", "nan"]
    model = ClassConditionalUNet(ARCH, digits.image_shape, digits.num_classes)
    optimizer = torch.optim.AdamW(model.parameters())
    step, _, _ = load_latest_training_state(tmp_path / "work" / "checkpoints", model, model, optimizer)
    assert step == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resuming_with_a_different_config_is_refused(digits, tmp_path):
    cfg = {"steps": 4, "batch_size": 8, "checkpoint_every": 2}
    train(digits, ARCH, cfg, SCHEDULE, tmp_path / "m.safetensors", tmp_path / "work")
    with pytest.raises(CheckpointError, match=r"different run \(differs in \['train'\]\)"):
        train(digits, ARCH, {**cfg, "lr": 1e-3}, SCHEDULE, tmp_path / "m.safetensors", tmp_path / "work")


def test_train_config_defaults_and_unknown_keys():
    cfg = resolve_train_cfg({"steps": 3})
    assert cfg["batch_size"] == 128 and cfg["lr"] == 2e-4 and cfg["warmup"] == 100 and cfg["ema_decay"] == 0.999
    with pytest.raises(ValueError, match="unknown training key"):
        resolve_train_cfg({"steps": 3, "learning_rate": 1.0})
    with pytest.raises(ValueError, match="steps"):
        resolve_train_cfg({})


def test_warmup_and_forward_noising():
    assert [learning_rate(s, 1.0, 4) for s in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert learning_rate(1, 1.0, 0) == 1.0
    x0, eps = torch.ones(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0)
    x_t = q_sample(x0, eps, torch.tensor([1.0, 0.6]), torch.tensor([0.0, 0.8]))
    assert torch.allclose(x_t[0], x0[0]) and torch.allclose(x_t[1], torch.full((1, 2, 2), 2.2))
