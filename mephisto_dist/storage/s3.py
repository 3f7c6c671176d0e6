"""Storage in an S3 bucket (or an S3-compatible store such as MinIO) through boto3.

The client is built from the standard AWS configuration: ``AWS_PROFILE`` and the shared config files,
the usual credential chain, and ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for another endpoint
(botocore reads those itself). Uploads go through ``upload_fileobj``, which streams in parts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from mephisto_dist.storage import CHUNK_BYTES, MissingKey, StorageError, check_key

_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3Storage:
    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # slow to import; only processes that touch storage pay for it
            from botocore.config import Config

            # Three attempts (botocore's standard backoff in between) and a 5 s connect timeout: a store
            # that is down is told within seconds, not after the ~20 s five attempts took, while a worker's
            # upload waits for the answer.
            self._client = boto3.session.Session().client(
                "s3", config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5,
                                    read_timeout=60))
        return self._client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: BinaryIO) -> int:
        counted = _Counting(data)
        self._call("store", key, lambda: self.client.upload_fileobj(counted, self.bucket, self._key(key)))
        return counted.size

    def get(self, key: str) -> bytes:
        return b"".join(self.stream(key))

    def stream(self, key: str) -> Iterator[bytes]:
        response = self._call("read", key, lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key)))
        return _chunks(response["Body"])

    def exists(self, key: str) -> bool:
        try:
            self._call("look up", key, lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key)))
        except MissingKey:
            return False
        return True

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def locator(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _call(self, verb: str, key: str, call: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise MissingKey(f"nothing stored under {key}") from None
            message = error.response.get("Error", {}).get("Message", code)
            raise StorageError(f"cannot {verb} {self.locator(key)}: {code}: {message}") from None
        except BotoCoreError as error:
            raise StorageError(f"cannot {verb} {self.locator(key)}: {error}") from None


class _Counting:
    """A read-only wrapper that counts the bytes boto3 reads, so ``put`` can say the size it stored."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._inner.read(size)
        self.size += len(chunk)
        return chunk


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        while chunk := body.read(CHUNK_BYTES):
            yield chunk
    finally:
        body.close()
