"""The model store against a local HTTP server laid out and answering like the Hugging Face hub.

The server serves ``<root>/<org>/<repo>/<path>`` at ``/<org>/<repo>/resolve/<revision>/<path>``
with the headers huggingface_hub reads (X-Repo-Commit, ETag = sha256 of an LFS file,
Content-Length), so the real download code runs: metadata, transfer, verification, atomic rename.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from impact_elastix.models import ModelNotAvailableError, ModelStore, export_mind, inspect
from impact_elastix.models.store import REPOSITORY, model_filename

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        self.lie_about: set[str] = set()  # paths whose ETag does not match the bytes served

    def file(self, url_path: str) -> tuple[Path, str] | None:
        parts = url_path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        relative = "/".join(parts[4:])
        path = self.root / parts[0] / parts[1] / relative
        return (path, relative) if path.is_file() else None


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Hub, str]]:
    state = Hub(tmp_path / "hub")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            state.requests.append(f"{self.command} {self.path}")
            found = state.file(self.path.split("?")[0])
            if found is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
                return
            path, relative = found
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if relative in state.lie_about:
                digest = hashlib.sha256(data + b"tampered").hexdigest()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{digest}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(False)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(True)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def publish(hub: Hub, name: str, source: Path) -> bytes:
    target = hub.root / REPOSITORY / model_filename(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target.read_bytes()


def test_download_verifies_and_caches(hub: tuple[Hub, str], tmp_path: Path) -> None:
    state, endpoint = hub
    data = publish(state, "MIND/R1D2", Path(export_mind(str(tmp_path / "m.pt"), "R1D2", 3)))
    store = ModelStore(tmp_path / "store", endpoint=endpoint)
    path = store.path("MIND/R1D2")
    assert path == tmp_path / "store" / "MIND" / "R1D2.pt" and path.read_bytes() == data
    assert inspect(path).outputs[0].field_of_view == (7, 7, 7)
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["MIND"]  # no staging folder left behind
    count = len(state.requests)
    assert store.path("MIND/R1D2") == path and len(state.requests) == count  # cached: no network


def test_tampered_or_non_torchscript_downloads_are_rejected_and_not_kept(hub: tuple[Hub, str], tmp_path: Path) -> None:
    state, endpoint = hub
    publish(state, "MIND/R1D1", Path(export_mind(str(tmp_path / "m.pt"), "R1D1", 2)))
    state.lie_about.add("MIND/R1D1.pt")
    store = ModelStore(tmp_path / "store", endpoint=endpoint)
    with pytest.raises(ValueError, match="sha256 .* does not match the hub's"):
        store.path("MIND/R1D1")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "checkpoint.pt")
    publish(state, "TS/Checkpoint", tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        store.path("TS/Checkpoint")
    assert not (tmp_path / "store" / "MIND" / "R1D1.pt").exists()
    assert not (tmp_path / "store" / "TS" / "Checkpoint.pt").exists()
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".download-")]


def test_missing_and_offline_errors_name_the_file(hub: tuple[Hub, str], tmp_path: Path) -> None:
    _, endpoint = hub
    store = ModelStore(tmp_path / "store", endpoint=endpoint)
    with pytest.raises(ModelNotAvailableError, match="has no file TS/M999_2_Layers.pt"):
        store.path("TS/M999_2_Layers")
    offline = ModelStore(tmp_path / "store", endpoint="http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(ModelNotAvailableError) as error:
        offline.path("TS/M730_2_Layers")
    message = str(error.value)
    assert "place it at " + str(tmp_path / "store" / "TS" / "M730_2_Layers.pt") in message
    assert "/VBoussot/impact-torchscript-models/resolve/main/TS/M730_2_Layers.pt" in message
    with pytest.raises(ModelNotAvailableError, match="downloads are disabled"):
        store.path("MIND/R2D2", download=False)
    for bad in ("../etc/passwd", "/abs/model", ""):
        with pytest.raises(ValueError, match="relative repository path"):
            store.local_path(bad)


def test_impact_loss_and_cli_take_store_names(
    hub: tuple[Hub, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, endpoint = hub
    publish(state, "MIND/R2D2", Path(export_mind(str(tmp_path / "m.pt"), "R2D2", 2)))
    monkeypatch.setenv("IMPACT_MODELS_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    from impact_elastix.cli import main
    from impact_elastix.torch import ImpactLoss

    loss = ImpactLoss("MIND/R2D2")
    x = torch.rand(1, 1, 24, 24)
    assert float(loss(x, x)) == 0.0 and float(loss(x, x.flip(-1))) > 0
    assert main(["models", "inspect", "MIND/R2D2"]) == 0
    from impact_elastix import FeatureModel, impact_parameter_map

    # MIND names select the component's built-in MIND in parameter maps (no file); other names are fetched.
    params = impact_parameter_map(FeatureModel("MIND/R2D2", dimension=2), dimension=2)
    assert params["ModelsPath"][0] == "MIND/R2D2" and params["PatchSize"][0] == "9*9"
    publish(state, "Lab/Descriptor", Path(export_mind(str(tmp_path / "d.pt"), "R2D2", 2)))
    params = impact_parameter_map(FeatureModel("Lab/Descriptor", dimension=2), dimension=2)
    assert params["ModelsPath"][0] == str(tmp_path / "store" / "Lab" / "Descriptor.pt")
    assert params["PatchSize"][0] == "9*9"
