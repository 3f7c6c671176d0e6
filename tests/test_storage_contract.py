"""One behavioural suite for the storage contract, run against every implementation: a folder, and S3
through boto3 against moto's server mode (a separate process over HTTP)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from mephisto_dist.errors import ConfigError
from mephisto_dist.settings import load_settings
from mephisto_dist.storage import CHUNK_BYTES, MissingKey, Storage, StorageError, open_storage
from mephisto_dist.storage.s3 import S3Storage


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.system)])  # s3: a moto server
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "file":
        yield open_storage((tmp_path / "store").as_uri())
    else:
        yield open_storage(request.getfixturevalue("s3_storage_url"))


def test_put_then_get_returns_the_same_bytes(storage: Storage) -> None:
    assert storage.put("runs/bundles/abc.tar", io.BytesIO(b"hello")) == 5
    assert storage.get("runs/bundles/abc.tar") == b"hello"
    assert storage.exists("runs/bundles/abc.tar")


def test_put_replaces_what_was_there(storage: Storage) -> None:
    storage.put("k", io.BytesIO(b"first version"))
    storage.put("k", io.BytesIO(b"second"))
    assert storage.get("k") == b"second"


def test_a_large_object_streams_in_chunks(storage: Storage) -> None:
    payload = os.urandom(CHUNK_BYTES * 2 + 12345)
    assert storage.put("uploads/1/a/big.bin", io.BytesIO(payload)) == len(payload)
    chunks = list(storage.stream("uploads/1/a/big.bin"))
    assert len(chunks) >= 3
    assert all(len(chunk) <= CHUNK_BYTES for chunk in chunks)
    assert b"".join(chunks) == payload


def test_an_empty_object_is_stored(storage: Storage) -> None:
    assert storage.put("empty", io.BytesIO(b"")) == 0
    assert storage.exists("empty")
    assert storage.get("empty") == b""


def test_a_missing_key_is_reported_as_missing(storage: Storage) -> None:
    assert not storage.exists("nothing/here")
    with pytest.raises(MissingKey, match="nothing/here"):
        storage.get("nothing/here")
    with pytest.raises(MissingKey):
        storage.stream("nothing/here")


def test_delete_removes_and_is_idempotent(storage: Storage) -> None:
    storage.put("a/b", io.BytesIO(b"x"))
    storage.delete("a/b")
    assert not storage.exists("a/b")
    storage.delete("a/b")


def test_keys_are_distinct_objects_not_prefixes(storage: Storage) -> None:
    storage.put("a/b", io.BytesIO(b"1"))
    storage.put("a/bc", io.BytesIO(b"2"))
    assert storage.get("a/b") == b"1"
    assert not storage.exists("a")


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../up", "a/../b", "a/./b", "sp ace", "a/"])
def test_invalid_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.put(key, io.BytesIO(b"x"))


def test_the_locator_names_the_key(storage: Storage) -> None:
    assert storage.locator("uploads/1/x.txt").endswith("uploads/1/x.txt")


# -- implementation specifics ---------------------------------------------------------------------------


def test_file_storage_writes_under_its_folder(tmp_path: Path) -> None:
    store = open_storage((tmp_path / "store").as_uri())
    store.put("uploads/7/f.txt", io.BytesIO(b"data"))
    assert (tmp_path / "store" / "uploads" / "7" / "f.txt").read_bytes() == b"data"
    assert store.locator("uploads/7/f.txt") == str(tmp_path / "store" / "uploads" / "7" / "f.txt")


@pytest.mark.system
def test_s3_storage_writes_under_its_prefix(s3_storage_url: str) -> None:
    store = open_storage(s3_storage_url)
    store.put("uploads/7/f.txt", io.BytesIO(b"data"))
    bucket = s3_storage_url.removeprefix("s3://").split("/")[0]
    body = boto3.client("s3").get_object(Bucket=bucket, Key="deploy/uploads/7/f.txt")["Body"].read()
    assert body == b"data"
    assert store.locator("uploads/7/f.txt") == f"s3://{bucket}/deploy/uploads/7/f.txt"


@pytest.mark.system
def test_s3_storage_honours_a_named_profile(s3_endpoint: str, s3_storage_url: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint and keys come from a profile in the shared config files, nothing else."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config"
    config.write_text(f"[profile moto]\nregion = us-east-1\nendpoint_url = {s3_endpoint}\n")
    credentials = tmp_path / "credentials"
    credentials.write_text("[moto]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "moto")
    store = open_storage(s3_storage_url)
    store.put("p", io.BytesIO(b"via profile"))
    assert store.get("p") == b"via profile"


def test_an_unreachable_s3_store_is_a_storage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = S3Storage("bucket")
    from botocore.config import Config

    store._client = boto3.client("s3", config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    with pytest.raises(StorageError, match="cannot store s3://bucket/k"):
        store.put("k", io.BytesIO(b"x"))


@pytest.mark.system
def test_a_missing_bucket_is_a_storage_error(s3_storage_url: str) -> None:
    store = open_storage("s3://no-such-bucket-here/x")
    with pytest.raises(StorageError, match="NoSuchBucket"):
        store.put("k", io.BytesIO(b"x"))


@pytest.mark.parametrize("url", ["ftp://host/x", "s3://", "file://host/x", "/plain/path"])
def test_a_bad_storage_url_is_refused_in_one_line(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MEPHISTO_DIST_STORAGE_URL"):
        open_storage(load_settings({"MEPHISTO_DIST_DATA_DIR": str(tmp_path),
                                    "MEPHISTO_DIST_STORAGE_URL": url}).effective_storage_url)


def test_the_default_store_is_a_folder_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings({"MEPHISTO_DIST_DATA_DIR": str(tmp_path)})
    open_storage(settings.effective_storage_url).put("k", io.BytesIO(b"v"))
    assert (tmp_path / "storage" / "k").read_bytes() == b"v"
