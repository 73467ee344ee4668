"""Models named by their hub id: ``model.path: org/name`` (with ``model.revision``, default 'main').

When the workflow is parsed, ``hub_models`` turns every pretrained experiment whose ``model.path`` is a hub id
(``is_hub_id``: org/name, not an existing local path, not below an existing folder or the models folder) into one
whose ``model.path`` is its download folder, ``<models_dir>/<org>/<name>/<revision>/``, keeping the id in
``model.hub`` and the revision in ``model.revision``; everything downstream (the folder checks, model_check,
sampling) reads that local folder, as for any other. Rule model_download (a local rule: it runs where the network
is, on a cluster the submit host) fills the folder with ``download``: only the files the adapter loads
(``select_files``: the source's components, one weight format), pinned to the commit the revision resolves to, which
it records with the file list in ``<revision>.download.json`` next to the folder (``record_path``). That record is
what model_check depends on, so a folder is downloaded once.

Offline (``HF_HUB_OFFLINE``) with the folder not there yet is refused when the workflow is parsed; every other problem
(no network, a missing repository or revision, a gated repository without a token) is one line from rule
model_download. The token (``hf auth login`` or ``HF_TOKEN``) is huggingface_hub's business: it is never passed,
logged or recorded here.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path, PurePosixPath

from .folders import HUB_ID

__all__ = ["COMPONENTS", "OPTIONAL_COMPONENTS", "DEFAULT_MODELS_DIR", "is_hub", "is_hub_id", "hub_models",
           "hub_downloads", "record_path", "downloaded", "select_files", "offline", "offline_message", "download",
           "read_record", "experiments_of", "missing_components"]

log = logging.getLogger(__name__)

DEFAULT_MODELS_DIR = "models"
DEFAULT_REVISION = "main"
# The subfolders each source's adapter loads (seminfo.models.<adapter>.load); None: the whole repository (python:
# model.path is handed to the user's entry function, which may read anything).
COMPONENTS: dict[str, tuple[str, ...] | None] = {
    "diffusers": ("unet", "scheduler"),
    "dit": ("transformer", "scheduler", "vae"),  # the VAE decodes the latents into the figures' images
    "stable_diffusion": ("unet", "scheduler", "text_encoder", "tokenizer", "vae"),
    "sd3": ("transformer", "scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
            "text_encoder_3", "tokenizer_3"),
    "python": None,
}
OPTIONAL_COMPONENTS = frozenset({"text_encoder_3", "tokenizer_3"})  # SD3 runs without T5 when the repo has none
TOP_FILES = ("model_index.json",)  # the pipeline's index: DiT's id2label class names
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx", ".pb", ".gguf")
PREFERRED_WEIGHTS = (".safetensors", ".bin")  # what from_pretrained reads, in its order of preference
_TRUE = {"1", "ON", "YES", "TRUE"}


def is_hub(spec: dict) -> bool:
    """Whether an experiment's model was named by its hub id (``hub_models`` has set ``model.hub``)."""
    return "hub" in spec.get("model", {})


def offline() -> bool:
    """huggingface_hub's offline switch, read now (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


def offline_message(repo_id: str, folder: str) -> str:
    """The one line for a hub id whose folder is not there and cannot be downloaded (offline)."""
    return (f"{repo_id!r} is not a local folder and the hub cannot be reached (offline); download it first, e.g. "
            f"`hf download {repo_id} --local-dir {folder}` (older huggingface_hub: huggingface-cli download), or run "
            "where the network is (rule model_download fetches it), or set model.path to a local folder")


def _revision_folder(revision: str) -> str:
    """A revision as one folder name (a branch such as refs/pr/1 holds slashes)."""
    return revision.replace("/", "--")


def record_path(folder) -> Path:
    """The download record next to a download folder: ``<models_dir>/<org>/<name>/<revision>.download.json``."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".download.json")


def downloaded(spec: dict) -> bool:
    """Whether a hub experiment's folder has been downloaded (its record is written last)."""
    return record_path(spec["model"]["path"]).is_file()


def read_record(spec: dict) -> dict | None:
    """A hub experiment's download record (repo id, revision, commit, files), or None (not a hub model / not yet)."""
    if not is_hub(spec):
        return None
    try:
        return json.loads(record_path(spec["model"]["path"]).read_text())
    except (OSError, ValueError):
        return None


def is_hub_id(path: str, models_dir: str = DEFAULT_MODELS_DIR, exists=None) -> bool:
    """Whether ``model.path`` names a hub repository: ``org/name`` that is no local path, whose ``org`` is no local
    folder and not the models folder (``models/DiT-XL-2-256`` is a local folder, downloaded or not).
    ``exists(path)``: default, it exists here."""
    exists = exists or (lambda p: Path(p).expanduser().exists())
    if not HUB_ID.match(path) or exists(path):
        return False
    org = path.split("/", 1)[0]
    return org != PurePosixPath(Path(models_dir).as_posix()).parts[0] and not exists(org)


def hub_models(config: dict, exists=None) -> dict:
    """The config with every hub-id ``model.path`` of a pretrained experiment turned into its download folder.

    ``exists(path)`` says whether a path is a local file or folder (default: it exists here). A local path
    (``is_hub_id`` false) keeps everything as it is; a ``model.revision`` with it is refused (it applies to hub ids
    only). A hub id gets ``model.path = <models_dir>/<org>/<name>/<revision folder>``, ``model.hub = org/name`` and
    ``model.revision`` (default 'main'). Offline with the folder not yet downloaded: ConfigError with the download
    command. The input is not modified.
    """
    from ..config import ConfigError

    config = copy.deepcopy(config)
    models_dir = os.path.normpath(config.get("models_dir", DEFAULT_MODELS_DIR))
    for name, spec in config["experiments"].items():
        model = spec.get("model", {})
        if spec.get("kind") != "ddpm" or model.get("source", "own") == "own" or "hub" in model:
            continue
        key = f"experiments.{name}.model"
        path = str(model["path"])
        if not is_hub_id(path, models_dir, exists):
            if "revision" in model:
                raise ConfigError(f"{key}.revision: applies to a model named by its hub id (org/name) only; "
                                  f"{path!r} is a local path (rule: unused-key)")
            continue
        revision = model.get("revision", DEFAULT_REVISION)
        folder = os.path.normpath(os.path.join(models_dir, path, _revision_folder(revision)))
        model.update(path=folder, hub=path, revision=revision)
        if offline() and not downloaded(spec):
            raise ConfigError(f"{key}.path: {offline_message(path, folder)} (rule: model-folder)")
    return config


def hub_downloads(config: dict) -> dict[str, dict]:
    """The downloads a config's hub experiments need, by their key ``<org>/<name>/<revision folder>`` below
    ``models_dir``: repo id, revision, folder, record and the sources that read it (sorted). Only what the files
    depend on: this is the download rule's params, and a change reruns it (and through its record, model_check)."""
    models_dir = os.path.normpath(config.get("models_dir", DEFAULT_MODELS_DIR))
    out: dict[str, dict] = {}
    for spec in config["experiments"].values():
        if spec.get("kind") != "ddpm" or not is_hub(spec):
            continue
        m = spec["model"]
        key = PurePosixPath(os.path.relpath(m["path"], models_dir)).as_posix()
        entry = out.setdefault(key, {"repo_id": m["hub"], "revision": m["revision"], "folder": m["path"],
                                     "record": str(record_path(m["path"])), "sources": []})
        entry["sources"] = sorted(set(entry["sources"]) | {m["source"]})
    return out


def experiments_of(config: dict, repo_id: str, revision: str) -> list[str]:
    """The experiments of a (raw or validated) config whose model is ``repo_id`` at ``revision``: for messages."""
    out = []
    for name, spec in (config.get("experiments") or {}).items():
        m = spec.get("model") or {}
        if m.get("hub", m.get("path")) == repo_id and m.get("revision", DEFAULT_REVISION) == revision:
            out.append(name)
    return out


def _weight_choice(names: list[str]) -> set[str]:
    """The weight files of one folder that from_pretrained reads: the non-variant files (no '.fp16' before the
    suffix; shards included) of the first format present of safetensors, bin; all of them if none is."""
    weights = [n for n in names if n.endswith(WEIGHT_SUFFIXES)]
    for suffix in PREFERRED_WEIGHTS:
        plain = [n for n in weights if n.endswith(suffix) and "." not in PurePosixPath(n).name[: -len(suffix)]]
        if plain:
            return set(plain)
    return set(weights)


def select_files(repo_files: list[str], sources) -> list[str]:
    """The files of a repository the sources' adapters load: ``model_index.json`` and every file of the needed
    components, of their weights only one format (``_weight_choice``). A python source takes every file."""
    needed: set[str] = set()
    for source in sources:
        if COMPONENTS[source] is None:
            return sorted(repo_files)
        needed |= set(COMPONENTS[source])
    by_component: dict[str, list[str]] = {}
    for f in repo_files:
        top = f.split("/", 1)[0]
        if "/" in f and top in needed:
            by_component.setdefault(top, []).append(f)
    chosen = [f for f in repo_files if f in TOP_FILES]
    for files in by_component.values():
        weights = _weight_choice(files)
        chosen += [f for f in files if not f.endswith(WEIGHT_SUFFIXES) or f in weights]
    return sorted(chosen)


def missing_components(repo_files: list[str], sources) -> list[str]:
    """The components the sources need that the repository lacks (optional ones aside)."""
    have = {f.split("/", 1)[0] for f in repo_files if "/" in f}
    needed = {c for s in sources for c in (COMPONENTS[s] or ())} - OPTIONAL_COMPONENTS
    return sorted(needed - have)


def _gated_message(repo_id: str, authenticated: bool) -> str:
    why = "your token has no access to it" if authenticated else "no token was given"
    return (f"{repo_id}: a gated repository and {why}: accept its terms at https://huggingface.co/{repo_id}, then "
            "log in (`hf auth login`) or set the environment variable HF_TOKEN, and rerun")


def _network_error(err: Exception) -> bool:
    """A failure to reach the hub: a ConnectionError or TimeoutError (huggingface_hub's offline switch included) or
    a transport error of the HTTP client huggingface_hub uses (httpx or requests, depending on its version)."""
    clients = ("httpx", "httpx2", "requests", "urllib3")
    return isinstance(err, (ConnectionError, TimeoutError)) or any(c.__module__.split(".")[0] in clients
                                                                    for c in type(err).__mro__)


def _has_token() -> bool:
    from huggingface_hub import get_token

    return get_token() is not None


def download(repo_id: str, revision: str, sources, folder, record, cache_dir, experiments=()) -> dict:
    """Download the files ``select_files`` picks from ``repo_id`` at ``revision`` into ``folder`` (resuming, and
    fetching nothing that is already there at the same commit) and write ``record``: repo id, revision, the commit
    it resolved to, the files. Problems are one ``InputError`` line; the token never appears in anything written.

    ``HF_ENDPOINT`` (read now) points at another hub; ``cache_dir`` holds huggingface_hub's revision references
    (the files themselves go to ``folder`` only). ``experiments``: those that read the folder, for the key in the
    messages (``experiments.<first>.model.path``).
    """
    from ..io import InputError, atomic_path

    key = f"experiments.{experiments[0]}.model" if experiments else "model"
    if offline():
        raise InputError(f"{key}.path: {offline_message(repo_id, str(folder))}")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision)
        repo_files = [s.rfilename for s in info.siblings or []]
        missing = missing_components(repo_files, sources)
        if missing:
            raise InputError(f"{key}.path: {repo_id} (revision {revision}) has no "
                             f"{', '.join(m + '/' for m in missing)}, which model.source {' / '.join(sources)} loads")
        files = select_files(repo_files, sources)
        log.info("%s: revision %s is commit %s; fetching %d of its %d files into %s", repo_id, revision,
                 info.sha, len(files), len(repo_files), folder)
        snapshot_download(repo_id, revision=info.sha, allow_patterns=files, local_dir=str(folder),
                          cache_dir=str(cache_dir), endpoint=endpoint)
    except GatedRepoError:
        raise InputError(f"{key}.path: {_gated_message(repo_id, _has_token())}") from None
    except RevisionNotFoundError:
        raise InputError(f"{key}.revision: {revision!r} is not a branch, tag or commit of {repo_id}") from None
    except RepositoryNotFoundError:
        hint = "" if _has_token() else " (a private repository needs a token: `hf auth login` or HF_TOKEN)"
        raise InputError(f"{key}.path: {repo_id!r} is neither a local folder nor a repository on the hub{hint}") \
            from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise InputError(f"{key}.path: {repo_id}: the hub answered HTTP {status}; try again later") from None
    except Exception as err:  # noqa: BLE001 - the HTTP client's connection errors (httpx, requests by version)
        if _network_error(err):
            raise InputError(f"{key}.path: {offline_message(repo_id, str(folder))} ({type(err).__name__})") from None
        if isinstance(err, OSError):  # the disk: full, not writable
            raise InputError(f"{key}.path: {repo_id}: cannot write {folder} ({err})") from None
        raise
    rec = {"repo_id": repo_id, "revision": revision, "commit": info.sha, "folder": str(folder),
           "sources": list(sources), "files": files}
    with atomic_path(record) as tmp:
        Path(tmp).write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    log.info("wrote %s", record)
    return rec

