"""Atomic writes, and a small object store over a local folder or `s3://bucket/prefix`.

Atomicity: a reader never sees half a file, and a failed write leaves the previous version intact.
Locally that is a temporary file beside the target, fsynced, then renamed over it (`os.replace` is
atomic on one filesystem). On S3 a PUT (or a multipart upload, which appears only when completed)
replaces an object in one step, so nothing extra is needed.

`open_store(root)` returns the store for a root; callers address objects by keys relative to the
root ("data/BTC_features.parquet") and never care which backend serves them. The S3 backend uses
boto3's default client, so it honours AWS_ENDPOINT_URL (a test server on 127.0.0.1) and the usual
credential chain.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pandas as pd

S3_SCHEME = "s3://"


class UnreadableParquetError(ValueError):
    """An object that is not a parquet file pyarrow can read; the message names its URI."""


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; a written object gets the mode a plain open() would give it, so a
# separate serving user can read production/ where the umask allows.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    with _atomic_target(path) as tmp:
        tmp.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def _atomic_target(path: str | Path) -> Iterator[IO[bytes]]:
    """A temporary file beside `path` that replaces it on success and vanishes on failure."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as tmp:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_copy(source: str | Path, target: str | Path) -> None:
    """Copy the file `source` to `target` as `atomic_write_bytes` writes: whole or not at all."""
    with open(source, "rb") as src, _atomic_target(target) as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime  # UTC


class Store(ABC):
    """Objects under one root, addressed by '/'-separated keys relative to it."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def uri(self, key: str) -> str:
        """Where `key` lives, as a path or s3:// URI (for messages and metadata)."""
        return f"{self.root}/{_clean_key(key)}"

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Replace `key` with `data` atomically."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The object's content; FileNotFoundError naming the URI when it does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def info(self, key: str) -> ObjectInfo:
        """Size and last-modified time; FileNotFoundError when the object does not exist."""

    @abstractmethod
    def upload_file(self, local_path: str | Path, key: str) -> None:
        """Copy a local file to `key` atomically."""

    @abstractmethod
    def download_file(self, key: str, local_path: str | Path) -> None:
        """Copy `key` to a local file atomically; FileNotFoundError when it does not exist."""

    @abstractmethod
    def list_keys(self, folder: str = "") -> list[str]:
        """Sorted keys of the objects under the folder `folder` (recursively; "" = everything)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object `key`; nothing happens when it does not exist."""

    @abstractmethod
    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create `key` holding `data` only if it does not exist, atomically; False if it did.

        Two writers racing for the same key: exactly one gets True (a claim's primitive).
        """

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def read_parquet(self, key: str) -> pd.DataFrame:
        import pyarrow as pa

        data = self.read_bytes(key)
        try:
            return pd.read_parquet(io.BytesIO(data))
        except pa.ArrowException as error:  # pyarrow's own message never names the file
            raise UnreadableParquetError(
                f"{self.uri(key)} is not a readable parquet file ({len(data):,} bytes; "
                f"{type(error).__name__}: {error})"
            ) from error

    def write_parquet(self, key: str, frame: pd.DataFrame) -> int:
        """Write `frame` (without its index) atomically; returns the size in bytes."""
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        data = buffer.getvalue()
        self.write_bytes(key, data)
        return len(data)


class LocalStore(Store):
    def path(self, key: str) -> Path:
        return Path(self.root) / _clean_key(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self.path(key), data)

    def read_bytes(self, key: str) -> bytes:
        return self._existing(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def info(self, key: str) -> ObjectInfo:
        stat = self._existing(key).stat()
        return ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, tz=UTC))

    def upload_file(self, local_path: str | Path, key: str) -> None:
        atomic_copy(local_path, self.path(key))

    def download_file(self, key: str, local_path: str | Path) -> None:
        atomic_copy(self._existing(key), local_path)

    def list_keys(self, folder: str = "") -> list[str]:
        base = Path(self.root)
        start = self.path(folder) if folder else base
        # Temporary files of writes in flight start with "." and are not objects yet.
        return sorted(
            path.relative_to(base).as_posix()
            for path in start.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        # Empty folders left behind would read as leftovers of a half-removed version.
        for parent in path.parents:
            if parent == Path(self.root) or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()

    def create_exclusive(self, key: str, data: bytes) -> bool:
        # A complete temporary file hard-linked into place: link() fails when the target exists,
        # and a reader never sees the object half written.
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            os.fchmod(fd, _FILE_MODE)
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.link(tmp_name, target)
        except FileExistsError:
            return False
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return True

    def _existing(self, key: str) -> Path:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such object")
        return path


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """('bucket', 'key/prefix') of an s3:// URI; the one place such a URI is taken apart."""
    if not uri.startswith(S3_SCHEME):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    return bucket, key


class S3Store(Store):
    def __init__(self, root: str, client: object | None = None) -> None:
        super().__init__(root)
        bucket, prefix = parse_s3_uri(root)
        if not bucket:
            raise ValueError(f"{root!r}: an S3 root needs a bucket, e.g. s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def _key(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def write_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def read_bytes(self, key: str) -> bytes:
        with self._not_found(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.info(key)
        except FileNotFoundError:
            return False
        return True

    def info(self, key: str) -> ObjectInfo:
        with self._not_found(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"])

    def upload_file(self, local_path: str | Path, key: str) -> None:
        self.client.upload_file(str(local_path), self.bucket, self._key(key))

    def download_file(self, key: str, local_path: str | Path) -> None:
        target = Path(local_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.fchmod(fd, _FILE_MODE)
        os.close(fd)
        try:
            with self._not_found(key):
                self.client.download_file(self.bucket, self._key(key), tmp_name)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def list_keys(self, folder: str = "") -> list[str]:
        full_prefix = (
            f"{self._key(folder)}/" if folder else (f"{self.prefix}/" if self.prefix else "")
        )
        strip = len(f"{self.prefix}/") if self.prefix else 0
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full_prefix
        ):
            keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def create_exclusive(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            # S3 conditional write: If-None-Match "*" fails with 412 when the key exists.
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"
            )
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code", "")) in {
                "PreconditionFailed",
                "412",
                "ConditionalRequestConflict",
            }:
                return False
            raise
        return True

    @contextmanager
    def _not_found(self, key: str) -> Iterator[None]:
        from botocore.exceptions import ClientError

        try:
            yield
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                raise FileNotFoundError(f"{self.uri(key)}: no such object") from error
            raise


def open_store(root: str | Path) -> Store:
    """The store for `root`: `s3://bucket/prefix` → S3, anything else → a local directory."""
    root = str(root)
    if root.startswith(S3_SCHEME):
        return S3Store(root)
    return LocalStore(str(Path(root).expanduser().resolve()))


def _clean_key(key: str) -> str:
    parts = [part for part in key.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"invalid storage key {key!r}: use a relative path without '..'")
    return "/".join(parts)
