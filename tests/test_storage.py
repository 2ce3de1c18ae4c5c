"""The store behind the storage root: one interface, local folder and S3 (moto on 127.0.0.1)."""

import io
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pandas as pd
import pytest

from crpbot_assets.storage import StorageResource
from v8_model import storage as storage_module
from v8_model.storage import LocalStore, S3Store, atomic_write_bytes, open_store


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/some/prefix"


def test_open_store_picks_the_backend(root):
    store = open_store(root)
    assert isinstance(store, S3Store if root.startswith("s3://") else LocalStore)


def test_write_read_exists_info_list(root):
    store = open_store(root)
    before = datetime.now(UTC) - timedelta(seconds=5)
    assert not store.exists("data/BTC_features.parquet")
    store.write_bytes("data/BTC_features.parquet", b"parquet bytes")
    store.write_text("models/BTC/config.json", '{"a": 1}')
    store.write_text("models/BTC/sub/x.txt", "x")
    store.write_text("models/BTCX/y.txt", "y")  # a sibling whose name starts like the folder

    assert store.exists("data/BTC_features.parquet")
    assert store.read_bytes("data/BTC_features.parquet") == b"parquet bytes"
    assert store.read_text("models/BTC/config.json") == '{"a": 1}'
    info = store.info("data/BTC_features.parquet")
    assert info.size == len(b"parquet bytes")
    assert before <= info.last_modified <= datetime.now(UTC) + timedelta(seconds=5)
    assert store.list_keys("models/BTC") == ["models/BTC/config.json", "models/BTC/sub/x.txt"]
    assert store.list_keys() == [
        "data/BTC_features.parquet",
        "models/BTC/config.json",
        "models/BTC/sub/x.txt",
        "models/BTCX/y.txt",
    ]
    assert store.uri("data/a.parquet") == f"{store.root}/data/a.parquet"


def test_overwrite_replaces_content(root):
    store = open_store(root)
    store.write_text("reports/r.md", "old")
    store.write_text("reports/r.md", "new")
    assert store.read_text("reports/r.md") == "new"


def test_upload_download(root, tmp_path):
    store = open_store(root)
    source = tmp_path / "local.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024))  # a few MiB, several copy chunks
    store.upload_file(source, "data/file.bin")
    target = tmp_path / "down" / "file.bin"
    store.download_file("data/file.bin", target)
    assert target.read_bytes() == source.read_bytes()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_missing_objects_raise_file_not_found_naming_the_uri(root, tmp_path):
    store = open_store(root)
    for call in (
        lambda: store.read_bytes("data/none.parquet"),
        lambda: store.info("data/none.parquet"),
        lambda: store.download_file("data/none.parquet", tmp_path / "x"),
    ):
        with pytest.raises(FileNotFoundError, match="data/none.parquet"):
            call()
    assert not (tmp_path / "x").exists()


def test_keys_must_stay_under_the_root(root):
    store = open_store(root)
    for key in ("../outside", "a/../../b", ""):
        with pytest.raises(ValueError, match="invalid storage key"):
            store.write_text(key, "x")


def test_storage_resource_parquet_round_trip(root):
    resource = StorageResource(root=root)
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=3, freq="min", tz="UTC"),
            "x": [1.0, 2, 3],
        }
    )
    size = resource.store.write_parquet("data/t.parquet", frame)
    assert size == resource.store.info("data/t.parquet").size
    pd.testing.assert_frame_equal(resource.store.read_parquet("data/t.parquet"), frame)


def test_s3_objects_land_under_the_prefix(s3_bucket):
    open_store(f"s3://{s3_bucket}/a/b").write_text("data/x.txt", "x")
    listed = boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["a/b/data/x.txt"]


def test_failed_local_write_keeps_the_previous_version(tmp_path, monkeypatch):
    store = open_store(tmp_path / "root")
    store.write_text("data/BTC_features.parquet", "version 1")

    def half_then_crash(source, target, length=0):
        target.write(source.read(4))
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfileobj", half_then_crash)
    source = tmp_path / "v2"
    source.write_text("version 2")
    with pytest.raises(OSError, match="disk full"):
        store.upload_file(source, "data/BTC_features.parquet")

    def crash_on_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", crash_on_fsync)
    with pytest.raises(OSError, match="I/O error"):
        store.write_text("data/BTC_features.parquet", "version 3")

    assert store.read_text("data/BTC_features.parquet") == "version 1"
    folder = Path(store.root) / "data"
    assert sorted(p.name for p in folder.iterdir()) == ["BTC_features.parquet"]  # no temp files


def test_reader_never_sees_a_partial_local_file(tmp_path, monkeypatch):
    """While a write is in flight, the target still holds the complete previous version."""
    target = tmp_path / "model.bin"
    atomic_write_bytes(target, b"A" * 1000)
    seen = []
    real_replace = os.replace

    def replace_after_looking(src, dst):
        seen.append(Path(dst).read_bytes())  # what a reader sees just before the swap
        real_replace(src, dst)

    monkeypatch.setattr(storage_module.os, "replace", replace_after_looking)
    atomic_write_bytes(target, b"B" * 2000)
    assert seen == [b"A" * 1000]
    assert target.read_bytes() == b"B" * 2000


def test_failed_s3_write_keeps_the_previous_version(s3_bucket):
    store = open_store(f"s3://{s3_bucket}/p")
    store.write_text("data/x.txt", "version 1")

    class Exploding(io.BytesIO):
        def read(self, *args):
            raise OSError("connection dropped mid-upload")

    with pytest.raises(OSError, match="connection dropped"):
        store.client.put_object(Bucket=s3_bucket, Key="p/data/x.txt", Body=Exploding(b"v2"))
    assert store.read_text("data/x.txt") == "version 1"
