"""The package's layout: subpackages in layers, each importing only its own layer and those below (issue 19).

Every module of src/seminfo is parsed (ast); every import of a seminfo module, at module level or inside a function,
relative or absolute, must point to the same layer or a lower one. No module may sit at a path of the flat layout.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "seminfo"

# Low to high. A module may import modules of its own layer and of the layers below it.
LAYERS = (
    {"io", "gpu_pool"},  # shared utilities without seminfo imports
    {"chain", "mixtures"},  # the paper's math; exact Gaussian mixtures
    {"config", "models", "ddpm", "analysis"},  # configuration, model adapters, the own model, what is measured
    {"stages", "plotting", "bench"},  # one function per rule; figures; benchmarks
    {"__init__", "api", "plot", "plan", "workflow"},  # the Python API and the workflow's entry points
)

# Modules of the flat layout that moved into subpackages; none may come back at its old path.
FLAT = ("schedules", "diffusion", "gaussian_path", "noise", "guidance", "clipping", "posterior", "pruning",
        "evaluator", "sampler", "rao_blackwell", "one_vs_rest", "precision", "gmm", "highdim", "speciation",
        "summary", "bootstrap", "decisions", "immse", "convergence", "health", "stages", "network_stages",
        "guidance_study", "network_convergence", "health_stage", "bench", "bench_networks", "flops")
OLD_PATHS = ([f"{name}.py" for name in FLAT] + ["studies", "ddpm/stages.py", "rounding_noise.yaml"])


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        yield path, parts


def _layer(top: str) -> int:
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"seminfo.{top} is in no layer of tests/test_layout.py")


def _top(parts) -> str:
    """The layer name of a module: its first component below seminfo (``__init__`` for the package itself)."""
    return parts[1] if len(parts) > 1 else "__init__"


def _imported(path: Path, parts) -> list[tuple[int, tuple[str, ...]]]:
    """(line, absolute module path) of every seminfo import in the file; ``from pkg import name`` counts as
    ``pkg.name`` (a module or a name in it: the layer is that of pkg.name's first component below seminfo)."""
    package = parts[:-1]  # the package a relative import starts from (for __init__: the package itself)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, tuple(a.name.split("."))) for a in node.names if a.name.split(".")[0] == "seminfo"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                module = base + (tuple(node.module.split(".")) if node.module else ())
            else:
                module = tuple(node.module.split("."))
            if module[0] != "seminfo":
                continue
            out += [(node.lineno, module + (a.name,)) for a in node.names]
    return out


def test_every_module_has_a_layer():
    for _, parts in _modules():
        _layer(_top(parts))


def test_no_upward_import():
    upward = []
    for path, parts in _modules():
        own = _layer(_top(parts))
        for line, target in _imported(path, parts):
            if len(target) < 2:
                continue
            if _layer(target[1]) > own:
                upward.append(f"{path.relative_to(SRC)}:{line} imports {'.'.join(target)}")
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("old", OLD_PATHS)
def test_no_module_at_a_flat_path(old):
    path = PACKAGE / old
    left = list(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
    assert not left, f"src/seminfo/{old} is a path of the flat layout"


def test_subpackages_only_document():
    """The new subpackages' __init__ files re-export nothing: every name is imported from its own module."""
    for sub in ("chain", "mixtures", "analysis", "stages", "bench"):
        tree = ast.parse((PACKAGE / sub / "__init__.py").read_text())
        assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], sub


def test_config_schema_is_package_data_and_the_workflows():
    """An installed seminfo (not only an editable one) has the config schema: it is a file of the package, named in
    pyproject's package data, and it is the file the workflow validates against (workflow/schemas links to it)."""
    import tomllib

    from seminfo import plan

    assert plan.SCHEMA_PATH.parent == PACKAGE.resolve() and plan.SCHEMA_PATH.is_file()
    data = tomllib.loads((SRC.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["seminfo"]
    assert plan.SCHEMA_PATH.name in data
    workflow_schema = SRC.parent / "workflow" / "schemas" / "config.schema.yaml"
    assert workflow_schema.resolve() == plan.SCHEMA_PATH
