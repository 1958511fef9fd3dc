"""The model store: TorchScript feature extractors by name, cached under ``~/.IMPACT/models``.

Names follow the public IMPACT model repository on Hugging Face (``TS/M730_2_Layers``,
``MIND/R1D2``, ``SAM2.1/Tiny_2_Layers``; ``.pt`` is implied). A name that is not cached is
downloaded with ``huggingface_hub`` when online: the file lands in a temporary folder inside the
store, is checked against the size and hash the hub reports (sha256 for LFS files, git blob sha1
otherwise) and against the TorchScript archive format, and only then renamed into place, so an
interrupted or corrupt download never leaves a file behind. Offline, the error names the file to
place by hand. Unpickled checkpoints are never loaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..digest import sha256_file
from .archive import torchscript_members

REPOSITORY = "VBoussot/impact-torchscript-models"


def default_root() -> Path:
    """``$IMPACT_MODELS_DIR``, else ``~/.IMPACT/models``."""
    return Path(os.environ.get("IMPACT_MODELS_DIR") or Path.home() / ".IMPACT" / "models")


class ModelNotAvailableError(FileNotFoundError):
    """A model is neither cached nor downloadable; the message says where to put it."""


def model_filename(name: str) -> str:
    """'TS/M730_2_Layers' -> 'TS/M730_2_Layers.pt'; rejects absolute paths and '..'."""
    path = PurePosixPath(name.strip())
    if not name.strip() or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise ValueError(f"model name {name!r} must be a relative repository path such as 'TS/M730_2_Layers'")
    return str(path) if path.suffix in (".pt", ".pt2") else f"{path}.pt"


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's object id, not security
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, size: int | None, etag: str | None) -> None:
    """Raises ValueError unless ``path`` has the hub's size and hash (etag: sha256 or git sha1)."""
    if size is None or not etag:
        raise ValueError(f"the hub reported no size or hash for {path.name}; refusing an unverifiable download")
    actual = path.stat().st_size
    if actual != size:
        raise ValueError(f"{path.name}: downloaded {actual} bytes, the hub says {size}")
    etag = etag.strip('"').removeprefix("W/").strip('"').lower()
    if len(etag) == 64:
        got, kind = sha256_file(path), "sha256"
    elif len(etag) == 40:
        got, kind = _git_blob_sha1(path), "git sha1"
    else:
        raise ValueError(f"{path.name}: the hub's hash {etag!r} is neither a sha256 nor a git sha1")
    if got != etag:
        raise ValueError(f"{path.name}: {kind} {got} does not match the hub's {etag}")


@dataclass
class ModelStore:
    """Where models are cached and where missing ones come from.

    ``endpoint``: the hub's base URL (None: huggingface_hub's default, which honours HF_ENDPOINT).
    """

    root: Path = field(default_factory=default_root)
    repo_id: str = REPOSITORY
    revision: str = "main"
    endpoint: str | None = None

    def local_path(self, name: str) -> Path:
        return Path(self.root) / model_filename(name)

    def url(self, name: str) -> str:
        base = (self.endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        return f"{base}/{self.repo_id}/resolve/{self.revision}/{model_filename(name)}"

    def path(self, name: str, download: bool = True) -> Path:
        """The cached file of ``name``, downloading it first when needed and allowed."""
        local = self.local_path(name)
        if local.is_file():
            return local
        if not download:
            raise ModelNotAvailableError(self._missing(name, "downloads are disabled"))
        return self.download(name)

    def download(self, name: str) -> Path:
        """Downloads ``name`` (verified, atomic) into the store, replacing a cached copy."""
        filename = model_filename(name)
        try:
            from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
            from huggingface_hub.errors import EntryNotFoundError
        except ImportError:
            raise ModelNotAvailableError(self._missing(name, "huggingface_hub is not installed")) from None
        endpoint = self.endpoint or os.environ.get("HF_ENDPOINT")  # read now: huggingface_hub reads it at import
        url = hf_hub_url(self.repo_id, filename, revision=self.revision, endpoint=endpoint)
        try:
            metadata = get_hf_file_metadata(url)
        except EntryNotFoundError:
            raise ModelNotAvailableError(
                f"model {name!r}: {self.repo_id} has no file {filename} (revision {self.revision})"
            ) from None
        except Exception as error:  # noqa: BLE001 - offline, proxy, DNS, HTTP: all mean "not reachable"
            raise ModelNotAvailableError(self._missing(name, f"{type(error).__name__}: {error}")) from None
        destination = self.local_path(name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=self.root))
        try:
            got = Path(
                hf_hub_download(self.repo_id, filename, revision=self.revision, endpoint=endpoint, local_dir=staging)
            )
            verify(got, metadata.size, metadata.etag)
            torchscript_members(got)
            os.replace(got, destination)
        except ValueError as error:
            raise ValueError(f"model {name!r} from {url} was rejected: {error}") from None
        except Exception as error:  # noqa: BLE001 - the transfer itself failed
            raise ModelNotAvailableError(self._missing(name, f"{type(error).__name__}: {error}")) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return destination

    def _missing(self, name: str, reason: str) -> str:
        return (
            f"model {name!r} is neither a local file nor in {self.root}, and could not be downloaded ({reason}). "
            f"Download {self.url(name)} by hand and place it at {self.local_path(name)}"
        )


def fetch(name: str, root: str | Path | None = None) -> Path:
    """The local path of a model by repository name (downloaded once), or of an existing file path."""
    if Path(name).is_file():
        return Path(name)
    if Path(name).is_absolute() or name.startswith(("./", "../", "~")) or "/" not in name.strip("/"):
        # Not a repository name (those are "<family>/<model>"): a missing local file.
        raise FileNotFoundError(f"model file not found: {name}")
    store = ModelStore(Path(root)) if root is not None else ModelStore()
    return store.path(name)
