"""This machine's cache of run bundles: each fetched from object storage on first use into
``<data dir>/bundle-cache/<sha256>/``, its hash checked, then served and imported from there (what a bundle
holds and how it is made: ``runs.bundles``)."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Final

from mephisto_dist.errors import ServiceError
from mephisto_dist.storage import CHUNK_BYTES, MissingKey, Storage

KEY_PREFIX: Final = "bundles/"
BUILD_DIR: Final = "build"
PYTHON_DIR: Final = "python"
REVIEW_DIR: Final = "review"


class BundleMissing(ServiceError):
    """The run's bundle is not in the storage this machine is configured with."""


class BundleCache:
    """This machine's extracted copies of bundles, fetched from storage on first use."""

    def __init__(self, storage: Storage, cache_dir: Path) -> None:
        self._storage = storage
        self._dir = cache_dir

    def local(self, key: str) -> Path:
        """The extracted bundle's folder, fetching it first if this machine has not yet."""
        digest = _digest_of(key)
        target = self._dir / digest
        if target.is_dir():
            return target
        self._dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=self._dir))
        try:
            tar_path = staging / "bundle.tar"
            try:
                with tar_path.open("wb") as out:
                    for chunk in self._storage.stream(key):
                        out.write(chunk)
            except MissingKey:
                raise BundleMissing(
                    f"run bundle {key} is not in this machine's storage ({self._storage.locator(key)}): "
                    "was the run created with another MEPHISTO_DIST_STORAGE_URL? Every machine of a "
                    "deployment needs the same one") from None
            if sha256_of(tar_path) != digest:
                raise ServiceError(f"run bundle {key} is corrupt in storage (its hash does not match)")
            extracted = staging / "files"
            with tarfile.open(tar_path) as tar:
                tar.extractall(extracted, filter="data")
            for folder in (BUILD_DIR, PYTHON_DIR):
                (extracted / folder).mkdir(exist_ok=True)
            try:
                extracted.rename(target)
            except OSError:
                if not target.is_dir():  # another process of this machine finished first otherwise
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def _digest_of(key: str) -> str:
    digest = key.removeprefix(KEY_PREFIX).removesuffix(".tar")
    if not key.startswith(KEY_PREFIX) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a bundle key: {key!r}")
    return digest


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for chunk in iter(lambda: data.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
