"""Property-based: any single malformed value in a valid config is rejected with one message naming its key."""

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seminfo.config import ConfigError, validate_config

from test_config import GOOD

DDPM = {
    "kind": "ddpm",
    "data": {"name": "digits", "classes": [0, 1, 2]},
    "model": {"preset": "digits"},
    "schedule": {"name": "cosine", "T": 50},
    "train": {"steps": 10, "batch_size": 8, "lr": 1e-3, "ema_decay": 0.99, "label_dropout": 0.1},
    "sampling": {"steps": 5, "trajectories_per_class": 3, "shards": 2, "seed": 1},
}
BASE = copy.deepcopy(GOOD)
BASE["experiments"]["d"] = DDPM


def leaves(node, path=()):
    """(path, value) of every scalar leaf, skipping partitions (their strings are class names)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "partitions":
                yield from leaves(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from leaves(value, path + (i,))
    else:
        yield path, node


def dotted(path):
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


LEAVES = list(leaves(BASE))


def invalid_for(value):
    """Replacement values that no field holding ``value`` accepts."""
    if isinstance(value, bool):
        return st.sampled_from(["yes", 3, None])
    if isinstance(value, (int, float)):
        return st.one_of(st.text(min_size=1, max_size=5), st.none(), st.just([1, 2]), st.just({"a": 1}))
    return st.one_of(st.text(min_size=1, max_size=8).filter(lambda s: s not in {
        "gmm", "ddpm", "linear", "cosine", "digits", "cifar10", "small", "large", "exact", "prior",
        "cifar10_ddpm"}), st.integers(), st.none())


@st.composite
def mutation(draw):
    path, value = draw(st.sampled_from(LEAVES))
    return path, draw(invalid_for(value))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation())
def test_single_bad_value_is_rejected_naming_its_key(schema, mut):
    path, bad = mut
    cfg = copy.deepcopy(BASE)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    try:
        validate_config(cfg, schema)
    except ConfigError as err:
        msg = str(err)
        key = msg.split(":", 1)[0]
        # the message names the mutated key, or the experiment holding it when the value breaks the
        # choice of schema branch (e.g. an unknown kind)
        assert dotted(path).startswith(key), (dotted(path), msg)
        assert "(rule: " in msg and "\n" not in msg
    else:
        raise AssertionError(f"{dotted(path)} = {bad!r} was accepted")


def test_every_leaf_is_reachable():
    assert len(LEAVES) > 30
