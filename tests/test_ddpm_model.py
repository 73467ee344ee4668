import hashlib
import json
import logging
import pickle

import pytest
import torch

from seminfo.ddpm.checkpoint import (
    CheckpointError,
    load_latest_training_state,
    load_model,
    save_model,
    save_training_state,
    sidecar_path,
)
from seminfo.ddpm.model import ARCH_PRESETS, ClassConditionalUNet, count_parameters, resolve_arch

TINY = {"preset": "digits", "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8}


def tiny_model(num_classes=3, image_shape=(1, 8, 8), seed=0):
    torch.manual_seed(seed)
    return ClassConditionalUNet(resolve_arch(TINY), image_shape, num_classes).eval()


def inputs(model, batch=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *model.image_shape), generator=g)
    t = torch.randint(1, 1001, (batch,), generator=g)
    y = torch.randint(0, model.num_classes + 1, (batch,), generator=g)
    return x, t, y


# --- architecture -------------------------------------------------------------------------------


def test_digits_preset_is_small():
    model = ClassConditionalUNet(resolve_arch({"preset": "digits"}), (1, 8, 8), 10)
    assert 0.5e6 <= count_parameters(model) <= 1.2e6


def test_cifar10_preset_matches_the_ddpm_paper_network():
    model = ClassConditionalUNet(resolve_arch({"preset": "cifar10_ddpm"}), (3, 32, 32), 10)
    assert 35.0e6 <= count_parameters(model) <= 36.0e6
    assert model.unet.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D")
    assert model.arch["dropout"] == 0.1


def test_forward_gives_noise_shaped_output_and_accepts_the_null_label():
    model = tiny_model(num_classes=3)
    assert model.null_label == 3
    x, t, _ = inputs(model)
    eps = model(x, t, torch.tensor([0, 1, 2, 3, 3]))
    assert isinstance(eps, torch.Tensor) and eps.shape == x.shape


def test_three_channel_images_with_attention_at_an_inner_level():
    arch = resolve_arch({**TINY, "block_out_channels": [16, 32, 32], "attention_resolutions": [8]})
    model = ClassConditionalUNet(arch, (3, 16, 16), 2)
    assert model.unet.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D")
    x, t, y = inputs(model)
    assert model(x, t, y).shape == (5, 3, 16, 16)


def test_labels_change_the_prediction():
    model = tiny_model()
    x, t, _ = inputs(model, batch=1)
    torch.nn.init.normal_(model.unet.class_embedding.weight)
    with torch.no_grad():
        assert not torch.allclose(model(x, t, torch.tensor([0])), model(x, t, torch.tensor([3])))


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"preset": "digits", "channels": [8]}, "unknown architecture key 'channels'"),
        ({"preset": "imagenet"}, "preset"),
        ({"block_out_channels": [16]}, "preset"),
        ({"preset": "digits", "norm_num_groups": 7}, "must divide every channel count"),
        ({"preset": "digits", "dropout": 1.0}, "dropout"),
    ],
)
def test_bad_architectures_raise_value_error(cfg, message):
    with pytest.raises(ValueError, match=message):
        resolve_arch(cfg)


def test_attention_resolution_must_match_a_level():
    arch = resolve_arch({**TINY, "attention_resolutions": [16]})
    with pytest.raises(ValueError, match=r"attention_resolutions \[16\] match no level"):
        ClassConditionalUNet(arch, (1, 8, 8), 3)


def test_presets_are_complete_and_resolve_to_themselves():
    for name, arch in ARCH_PRESETS.items():
        assert resolve_arch({"preset": name}) == arch


# --- model checkpoints --------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_model()
    path = tmp_path / "model.safetensors"
    save_model(path, model, meta={"steps": 7})
    loaded, meta = load_model(path, expect_num_classes=3)
    assert meta["steps"] == 7 and meta["num_classes"] == 3 and meta["arch"] == model.arch
    assert not loaded.training and loaded.null_label == 3
    x, t, y = inputs(model)
    with torch.no_grad():
        assert torch.equal(model(x, t, y), loaded(x, t, y))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def test_loading_never_unpickles(tmp_path, monkeypatch):
    model = tiny_model()
    save_model(tmp_path / "m.safetensors", model, meta={})
    ema = tiny_model(seed=1)
    optimizer = torch.optim.AdamW(model.parameters())
    save_training_state(tmp_path / "ckpt", 1, model, ema, optimizer, {}, {})

    def forbidden(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(module, name, forbidden)
    load_model(tmp_path / "m.safetensors")
    assert load_latest_training_state(tmp_path / "ckpt", model, ema, optimizer)[0] == 1


def test_truncated_weights_raise_checkpoint_error_naming_the_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, tiny_model(), meta={})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="sha256") as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_corrupt_weights_with_a_matching_hash_raise_checkpoint_error(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, tiny_model(), meta={})
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    record = json.loads(sidecar_path(path).read_text())
    record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    sidecar_path(path).write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="corrupt safetensors") as err:
        load_model(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("missing", ["m.safetensors", "m.json"])
def test_missing_files_raise_checkpoint_error(tmp_path, missing):
    save_model(tmp_path / "m.safetensors", tiny_model(), meta={})
    (tmp_path / missing).unlink()
    with pytest.raises(CheckpointError, match=f"{tmp_path / missing}: file not found"):
        load_model(tmp_path / "m.safetensors")


def test_wrong_class_count_raises_checkpoint_error(tmp_path):
    save_model(tmp_path / "m.safetensors", tiny_model(num_classes=3), meta={})
    with pytest.raises(CheckpointError, match="has 3 classes, expected 10"):
        load_model(tmp_path / "m.safetensors", expect_num_classes=10)


def test_architecture_mismatch_raises_checkpoint_error(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, tiny_model(), meta={})
    record = json.loads(sidecar_path(path).read_text())
    record["arch"]["layers_per_block"] = 2
    sidecar_path(path).write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="weights do not match the architecture") as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_reserved_meta_keys_and_wrong_suffix_are_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_model(tmp_path / "m.safetensors", tiny_model(), meta={"arch": 1})
    with pytest.raises(ValueError, match=".safetensors"):
        save_model(tmp_path / "m.pt", tiny_model(), meta={})


# --- training states ----------------------------------------------------------------------------


def _trained(seed):
    """A model, its EMA and an AdamW optimizer after one step, all distinct per seed."""
    model, ema = tiny_model(seed=seed).train(), tiny_model(seed=seed + 100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, t, y = inputs(model, seed=seed)
    model(x, t, y).square().mean().backward()
    optimizer.step()
    return model, ema, optimizer


def _save(root, step):
    model, ema, optimizer = _trained(step)
    rng = {"data": torch.Generator().manual_seed(step).get_state()}
    save_training_state(root, step, model, ema, optimizer, rng, {"note": f"step {step}"})
    return model, ema, optimizer, rng


def test_training_state_round_trip_and_only_the_last_two_are_kept(tmp_path):
    root = tmp_path / "ckpt"
    for step in (10, 20):
        _save(root, step)
    model, ema, optimizer, rng = _save(root, 30)
    assert sorted(p.name for p in root.iterdir()) == ["step_00000020", "step_00000030"]

    fresh, fresh_ema, _ = _trained(0)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=5.0)
    step, rng_loaded, extra = load_latest_training_state(root, fresh, fresh_ema, fresh_opt)
    assert step == 30 and extra == {"note": "step 30"}
    assert torch.equal(rng_loaded["data"], rng["data"])
    for a, b in [(fresh, model), (fresh_ema, ema)]:
        assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    loaded, saved = fresh_opt.state_dict(), optimizer.state_dict()
    assert loaded["param_groups"] == saved["param_groups"]
    for param, entries in saved["state"].items():
        assert all(torch.equal(loaded["state"][param][k], v) for k, v in entries.items())


def test_interrupted_and_corrupt_states_are_skipped(tmp_path, caplog):
    root = tmp_path / "ckpt"
    _save(root, 10)
    _save(root, 20)
    (root / ".tmp-crashed").mkdir()
    (root / ".tmp-crashed" / "state.json").write_text("{")
    latest = root / "step_00000020" / "state.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])
    model, ema, optimizer = _trained(0)
    with caplog.at_level(logging.WARNING):
        step, _, extra = load_latest_training_state(root, model, ema, optimizer)
    assert step == 10 and extra == {"note": "step 10"}
    assert "skipping training state" in caplog.text and "step_00000020" in caplog.text


def test_no_training_state_gives_none(tmp_path):
    model, ema, optimizer = _trained(0)
    assert load_latest_training_state(tmp_path / "absent", model, ema, optimizer) is None
