"""Models named by their hub id (issue 20): rule model_download against a local stand-in of the hub.

``FakeHub`` serves, from a thread in the test, the endpoints ``huggingface_hub.snapshot_download`` and
``HfApi.model_info`` use: ``GET /api/models/<repo>/revision/<rev>`` (the commit and the file list), ``GET
/api/models/<repo>/tree/<rev>`` (the recursive listing with sizes and blob ids) and ``HEAD``/``GET
<repo>/resolve/<rev>/<file>`` (X-Repo-Commit, ETag, Content-Length, then the bytes), with the hub's error codes
(X-Error-Code RepoNotFound, RevisionNotFound, GatedRepo). Its repository is a tiny DiT twin written with
save_pretrained, plus files the adapter does not load (a big root file, a safety checker, a second weight format),
which must never be fetched. ``HF_ENDPOINT`` points at it; HF_HOME and the models folder are in tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from seminfo.config import ConfigError, load_schema, validate_config
from seminfo.io import InputError
from seminfo.models import hub
from twins import dit_twin

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
REPO_ID = "tinyorg/dit-twin"
GATED_ID = "tinyorg/gated-twin"
TOKEN = "hf_testtoken_never_written_0123456789"
UNNEEDED = ("big_unneeded.bin", "safety_checker/model.safetensors", "transformer/diffusion_pytorch_model.bin",
            "transformer/diffusion_pytorch_model.fp16.safetensors")
SAMPLING = {"steps": 4, "trajectories_per_class": 2, "shards": 1, "batch_size": 64, "snapshots": 3}


class FakeHub:
    """The hub's HTTP interface for a few repositories held in memory; every request is logged (method, path)."""

    def __init__(self, repos: dict[str, dict]):
        self.repos = repos  # repo id -> {"sha": commit, "files": {path: bytes}, "gated": bool}
        self.requests: list[tuple[str, str]] = []
        self.auth: list[str | None] = []
        hub_ = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub_.answer(self, head=True)

            def do_GET(self):
                hub_.answer(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def file_gets(self) -> list[str]:
        """The files requested through resolve/ (HEAD or GET)."""
        return [p.split("/resolve/", 1)[1].split("/", 1)[1] for _, p in self.requests if "/resolve/" in p]

    @staticmethod
    def _send(h, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _error(self, h, status: int, code: str, head: bool):
        self._send(h, status, json.dumps({"error": code}).encode(), {"X-Error-Code": code,
                                                                      "Content-Type": "application/json"}, head)

    def answer(self, h, head: bool):
        path = unquote(urlsplit(h.path).path)
        self.requests.append(("HEAD" if head else "GET", path))
        self.auth.append(h.headers.get("Authorization"))
        api = path.startswith("/api/models/")
        parts = path[len("/api/models/"):].split("/") if api else path.lstrip("/").split("/")
        repo_id = "/".join(parts[:2])
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, 404, "RepoNotFound", head)
        if repo.get("gated") and h.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._error(h, 401, "GatedRepo", head)
        kind, rev = parts[2], parts[3] if len(parts) > 3 else "main"
        if rev not in ("main", repo["sha"]):
            return self._error(h, 404, "RevisionNotFound", head)
        files = repo["files"]
        if api and kind == "revision":
            body = {"id": repo_id, "modelId": repo_id, "sha": repo["sha"], "private": False,
                    "gated": bool(repo.get("gated")), "siblings": [{"rfilename": f} for f in sorted(files)]}
            return self._send(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
        if api and kind == "tree":
            body = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for f, b in sorted(files.items())]
            return self._send(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
        if not api and kind == "resolve":
            name = "/".join(parts[4:])
            if name not in files:
                return self._error(h, 404, "EntryNotFound", head)
            data = files[name]
            return self._send(h, 200, data, {"X-Repo-Commit": repo["sha"], "Content-Type": "application/octet-stream",
                                             "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}, head)
        return self._error(h, 404, "EntryNotFound", head)


def repo_files(folder: Path) -> dict[str, bytes]:
    """A twin folder as a repository: its files, plus the unneeded ones (the big one 2 MB)."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    files["big_unneeded.bin"] = b"\0" * (2 << 20)
    files["safety_checker/model.safetensors"] = b"x" * 1000
    files["safety_checker/config.json"] = b"{}"
    files["transformer/diffusion_pytorch_model.bin"] = b"not torch" * 100
    files["transformer/diffusion_pytorch_model.fp16.safetensors"] = b"half" * 100
    return files


@pytest.fixture(scope="module")
def twin_files(tmp_path_factory):
    return repo_files(dit_twin(tmp_path_factory.mktemp("twin") / "dit"))


@pytest.fixture
def fake_hub(twin_files, tmp_path, monkeypatch):
    """The stand-in, online, with HF_HOME (token file, cache) in tmp_path and no token."""
    import huggingface_hub.constants as constants

    repos = {REPO_ID: {"sha": "a" * 40, "files": twin_files},
             GATED_ID: {"sha": "b" * 40, "files": twin_files, "gated": True},
             "tinyorg/no-vae": {"sha": "c" * 40, "files": {f: b for f, b in twin_files.items() if "vae/" not in f}}}
    with FakeHub(repos) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        # huggingface_hub reads these when imported (an earlier test may have imported it offline)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
        yield server


def hub_config(tmp_path, path=REPO_ID, **model) -> dict:
    return {"models_dir": str(tmp_path / "models"), "experiments": {"m": {
        "kind": "ddpm", "sampling": SAMPLING, "immse": {"enable": False},
        "model": {"source": "dit", "path": path, "classes": ["golden retriever", "tabby"]} | model}}}


def fetch(cfg: dict) -> dict:
    """Rule model_download's work for the config's one download."""
    (d,) = hub.hub_downloads(cfg).values()
    return hub.download(**d, cache_dir=Path(cfg["models_dir"]) / ".cache", experiments=["m"])


# --- pure parts ------------------------------------------------------------------------------------------------------


def test_select_files_keeps_the_components_and_one_weight_format():
    listing = ["model_index.json", "README.md", "v1-5.ckpt", "unet/config.json", "unet/diffusion_pytorch_model.bin",
               "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
               "unet/diffusion_flax_model.msgpack", "scheduler/scheduler_config.json", "vae/config.json",
               "vae/diffusion_pytorch_model.bin", "text_encoder/config.json", "text_encoder/model-00001-of-00002"
               ".safetensors", "text_encoder/model-00002-of-00002.safetensors", "text_encoder/model.safetensors"
               ".index.json", "tokenizer/vocab.json", "tokenizer/merges.txt", "safety_checker/model.safetensors"]
    assert hub.select_files(listing, ["stable_diffusion"]) == sorted([
        "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json", "vae/config.json", "vae/diffusion_pytorch_model.bin",
        "text_encoder/config.json", "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder/model-00002-of-00002.safetensors", "text_encoder/model.safetensors.index.json",
        "tokenizer/vocab.json", "tokenizer/merges.txt"])
    assert hub.select_files(listing, ["diffusers"]) == ["model_index.json", "scheduler/scheduler_config.json",
                                                        "unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
    assert hub.select_files(listing, ["python"]) == sorted(listing)
    assert hub.missing_components(listing, ["sd3"]) == ["text_encoder_2", "tokenizer_2", "transformer"]


def test_config_points_a_hub_id_at_its_download_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    cfg = validate_config(hub_config(tmp_path, revision="refs/pr/1"), load_schema(SCHEMA))
    model = cfg["experiments"]["m"]["model"]
    assert model["path"] == str(tmp_path / "models" / REPO_ID / "refs--pr--1")
    assert (model["hub"], model["revision"]) == (REPO_ID, "refs/pr/1")
    (d,) = hub.hub_downloads(cfg).values()
    assert d["record"] == model["path"] + ".download.json" and d["sources"] == ["dit"]
    assert validate_config(hub_config(tmp_path), load_schema(SCHEMA))["experiments"]["m"]["model"]["revision"] == \
        "main"
    local = tmp_path / "local"
    local.mkdir()
    with pytest.raises(ConfigError, match=r"experiments\.m\.model\.revision: applies to a model named by its hub id"):
        validate_config(hub_config(tmp_path, path=str(local), revision="main"), load_schema(SCHEMA))


def test_offline_hub_id_is_refused_at_parse_time_with_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        validate_config(hub_config(tmp_path), load_schema(SCHEMA))
    message = str(err.value)
    assert message.startswith(f"experiments.m.model.path: '{REPO_ID}' is not a local folder") and "\n" not in message
    assert f"`hf download {REPO_ID} --local-dir {tmp_path / 'models' / REPO_ID / 'main'}`" in message


# --- against the stand-in ------------------------------------------------------------------------------------------


def test_download_fetches_only_what_the_adapter_loads_once(fake_hub, tmp_path, twin_files):
    cfg = validate_config(hub_config(tmp_path), load_schema(SCHEMA))
    rec = fetch(cfg)
    wanted = sorted(f for f in twin_files if f not in UNNEEDED and not f.startswith("safety_checker/"))
    assert rec["files"] == wanted and rec["commit"] == "a" * 40 and rec["revision"] == "main"
    assert sorted(set(fake_hub.file_gets())) == wanted  # nothing else was asked for
    folder = Path(cfg["experiments"]["m"]["model"]["path"])
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and ".cache" not in p.parts) == wanted
    assert json.loads(hub.record_path(folder).read_text()) == rec
    assert not (tmp_path / "hf_home" / "hub").exists()  # the user's cache is not touched
    fake_hub.requests.clear()
    assert fetch(cfg)["files"] == wanted
    assert fake_hub.file_gets() == []  # a second run fetches no file (one API call resolves the revision)


def test_downloaded_folder_loads_through_the_adapter(fake_hub, tmp_path):
    import torch

    from seminfo.models import check_sources, load_adapter

    cfg = validate_config(hub_config(tmp_path), load_schema(SCHEMA))
    check_sources(cfg)  # not downloaded yet: skipped (rule model_check runs it)
    fetch(cfg)
    check_sources(cfg)
    spec = cfg["experiments"]["m"]
    adapter = load_adapter(spec, None, torch.device("cpu"))
    assert adapter.num_conditions == 2 and adapter.source == "dit"
    from seminfo.models import adapter_record

    assert adapter_record(spec, adapter)["hub"] == {"repo_id": REPO_ID, "revision": "main", "commit": "a" * 40}


@pytest.mark.parametrize("path, revision, pattern", [
    ("tinyorg/nowhere", "main", r"^experiments\.m\.model\.path: 'tinyorg/nowhere' is neither a local folder nor a "
                                r"repository on the hub \(a private repository needs a token: `hf auth login` or "
                                r"HF_TOKEN\)$"),
    (REPO_ID, "v9", r"^experiments\.m\.model\.revision: 'v9' is not a branch, tag or commit of tinyorg/dit-twin$"),
    (GATED_ID, "main", r"^experiments\.m\.model\.path: tinyorg/gated-twin: a gated repository and no token was "
                       r"given: .*`hf auth login`.* HF_TOKEN"),
    ("tinyorg/no-vae", "main", r"^experiments\.m\.model\.path: tinyorg/no-vae \(revision main\) has no vae/, which "
                               r"model\.source dit loads$"),
])
def test_hub_problems_are_one_line(fake_hub, tmp_path, path, revision, pattern):
    cfg = validate_config(hub_config(tmp_path, path=path, revision=revision), load_schema(SCHEMA))
    with pytest.raises(InputError, match=pattern) as err:
        fetch(cfg)
    assert "\n" not in str(err.value)
    assert fake_hub.file_gets() == [] and not hub.downloaded(cfg["experiments"]["m"])


def test_gated_repository_with_a_token_and_the_token_is_written_nowhere(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    cfg = validate_config(hub_config(tmp_path, path=GATED_ID), load_schema(SCHEMA))
    assert fetch(cfg)["commit"] == "b" * 40
    assert f"Bearer {TOKEN}" in fake_hub.auth
    for f in (tmp_path / "models").rglob("*"):
        assert not f.is_file() or TOKEN.encode() not in f.read_bytes(), f


def test_no_network_is_one_line_with_the_download_command(fake_hub, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    cfg = validate_config(hub_config(tmp_path), load_schema(SCHEMA))
    with pytest.raises(InputError, match=rf"^experiments\.m\.model\.path: '{REPO_ID}' is not a local folder and the "
                                         rf"hub cannot be reached .*`hf download {REPO_ID} --local-dir ") as err:
        fetch(cfg)
    assert "\n" not in str(err.value)


# --- the workflow ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_workflow_downloads_a_hub_id_and_runs_on_it(fake_hub, tmp_path):
    from test_workflow_gmm import snakemake

    cfg = hub_config(tmp_path)
    cfg["models_dir"] = "models"  # relative to the working directory
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "model_download" in proc.stdout + proc.stderr
    proc = snakemake(tmp_path, "results/m/shards/sample_0.nc")
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((tmp_path / "models" / REPO_ID / "main.download.json").read_text())
    assert record["commit"] == "a" * 40
    assert (tmp_path / "models" / REPO_ID / "main.download.log").is_file()
    adapter = json.loads((tmp_path / "results" / "m" / "model" / "adapter.json").read_text())
    assert adapter["hub"]["commit"] == "a" * 40 and adapter["path"] == f"models/{REPO_ID}/main"
    import xarray as xr

    with xr.open_dataset(tmp_path / "results" / "m" / "shards" / "sample_0.nc", engine="netcdf4") as ds:
        assert json.loads(ds.attrs["model_hub"]) == {"repo_id": REPO_ID, "revision": "main", "commit": "a" * 40}
    gets = len(fake_hub.file_gets())
    proc = snakemake(tmp_path, "results/m/shards/sample_0.nc")  # nothing to do: no download, no job
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    assert len(fake_hub.file_gets()) == gets


def test_local_looking_paths_are_not_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.is_hub_id("facebook/DiT-XL-2-256")
    assert not hub.is_hub_id("models/DiT-XL-2-256")  # the models folder: local, downloaded or not
    assert not hub.is_hub_id("store/DiT-XL-2-256", models_dir="store/hub")
    (tmp_path / "runs").mkdir()
    assert not hub.is_hub_id("runs/model")  # below an existing folder
    assert not hub.is_hub_id("model.pt") and not hub.is_hub_id("/abs/x") and not hub.is_hub_id("a/b/c")
