"""Production versions behind one pointer: promotion verifies, switches atomically, rolls back."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import boto3
import pytest
from helpers import tree_digest

from crpbot_assets.cli import main as crpbot
from v8_model.data.synthetic import generate_candles
from v8_model.registry.claims import ClaimError, claim_key, symbol_writer_claim
from v8_model.registry.promotion import (
    KEEP_VERSIONS,
    PromotionError,
    current_folder,
    folder_digests,
    promote,
    read_pointer,
    rollback,
)
from v8_model.storage import LocalStore, Store, open_store

SYMBOL = "BTC"
STAGED = f"models/{SYMBOL}"


def stage(store: Store, weights: bytes) -> dict[str, dict]:
    """Write a model's files to the staging folder; returns the hashes training records."""
    store.write_bytes(f"{STAGED}/weights.npz", weights)
    store.write_text(f"{STAGED}/config.json", json.dumps({"weights": weights.hex()[:8]}))
    return folder_digests(store, STAGED)


def serving_weights(store: Store) -> bytes:
    return store.read_bytes(f"{current_folder(store, SYMBOL)}/weights.npz")


def test_promotion_copies_verified_files_into_a_new_version(tmp_path):
    store = open_store(tmp_path)
    recorded = stage(store, b"first model")
    pointer = promote(store, SYMBOL, STAGED, recorded, {"job_name": "job-1"})
    assert serving_weights(store) == b"first model"
    promotion = json.loads(store.read_text(f"{current_folder(store, SYMBOL)}/promotion.json"))
    assert promotion["files"] == recorded and promotion["job_name"] == "job-1"
    assert pointer.previous == ()


def test_truncated_staged_weights_are_refused_and_production_is_untouched(tmp_path):
    store = open_store(tmp_path)
    promote(store, SYMBOL, STAGED, stage(store, b"good model" * 100), {"job_name": "job-1"})
    recorded = stage(store, b"new model" * 100)
    weights = tmp_path / STAGED / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:50])  # truncated after training recorded it
    before = tree_digest(tmp_path / "production")

    with pytest.raises(PromotionError) as error:
        promote(store, SYMBOL, STAGED, recorded, {"job_name": "job-2"})
    message = str(error.value)
    assert f"{STAGED}/weights.npz has sha256" in message and "(50 bytes)" in message
    assert "Nothing was changed" in message and "Fix: retrain BTC" in message
    assert tree_digest(tmp_path / "production") == before
    assert serving_weights(store) == b"good model" * 100


def test_a_missing_staged_file_is_refused(tmp_path):
    store = open_store(tmp_path)
    recorded = stage(store, b"model")
    store.delete(f"{STAGED}/config.json")
    with pytest.raises(PromotionError, match="config.json is missing"):
        promote(store, SYMBOL, STAGED, recorded, {})
    assert read_pointer(store, SYMBOL) is None


def test_rollback_serves_the_previous_version_and_the_cli_says_so(tmp_path, capsys):
    store = open_store(tmp_path)
    for number in (1, 2, 3):
        promote(store, SYMBOL, STAGED, stage(store, f"model {number}".encode()), {})
    assert serving_weights(store) == b"model 3"

    assert crpbot(["rollback", SYMBOL, "--root", str(tmp_path)]) == 0
    assert serving_weights(store) == b"model 2"
    out, err = capsys.readouterr()
    assert "now serves version" in out
    # Promoted outside Dagster, nothing was tracked: the alias has nowhere to move, and says so.
    assert "crpbot-BTC@champion was NOT moved" in err and "no MLflow store there yet" in err
    left, pointer = rollback(store, SYMBOL)
    assert serving_weights(store) == b"model 1" and pointer.previous == ()
    assert not store.list_keys(f"production/{SYMBOL}/versions/{left}")  # the version left is gone

    assert crpbot(["rollback", SYMBOL, "--root", str(tmp_path)]) == 1
    assert "no earlier production version" in capsys.readouterr().err
    assert crpbot(["rollback", "ETH", "--root", str(tmp_path)]) == 1
    assert "ETH has no production model" in capsys.readouterr().err


def test_rollback_refuses_a_damaged_previous_version(tmp_path):
    store = open_store(tmp_path)
    promote(store, SYMBOL, STAGED, stage(store, b"model 1"), {})
    promote(store, SYMBOL, STAGED, stage(store, b"model 2"), {})
    previous = read_pointer(store, SYMBOL).previous[0]
    store.write_bytes(f"production/{SYMBOL}/versions/{previous}/weights.npz", b"tampered")
    with pytest.raises(PromotionError, match="recorded"):
        rollback(store, SYMBOL)
    assert serving_weights(store) == b"model 2"


def test_only_the_newest_versions_are_kept(tmp_path):
    store = open_store(tmp_path)
    for number in range(KEEP_VERSIONS + 2):
        promote(store, SYMBOL, STAGED, stage(store, f"model {number}".encode()), {})
    pointer = read_pointer(store, SYMBOL)
    versions = {p.name for p in (tmp_path / "production" / SYMBOL / "versions").iterdir()}
    assert versions == {pointer.version, *pointer.previous}
    assert len(versions) == KEEP_VERSIONS


def test_promotion_and_rollback_on_s3(s3_bucket):
    store = open_store(f"s3://{s3_bucket}/crpbot")
    promote(store, SYMBOL, STAGED, stage(store, b"model 1"), {})
    promote(store, SYMBOL, STAGED, stage(store, b"model 2"), {})
    rollback(store, SYMBOL)
    assert serving_weights(store) == b"model 1"
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]]
    versions = {key.split("/")[4] for key in keys if "/versions/" in key}
    assert len(versions) == 1  # the version rolled back from was deleted


def test_a_corrupt_pointer_is_a_clear_error(tmp_path):
    store = open_store(tmp_path)
    store.write_text(f"production/{SYMBOL}/current.json", "{not json")
    with pytest.raises(PromotionError, match="corrupt production pointer"):
        current_folder(store, SYMBOL)


@pytest.mark.parametrize("field", ["version", "previous"])
def test_a_tampered_pointer_is_refused_by_rollback_and_predict_with_one_line(
    tmp_path, capsys, field
):
    """`"version": "../../../candles"` once made `crpbot rollback` die with a ValueError
    traceback; a path in the pointer must never steer reads or the clean-up of versions."""
    store = open_store(tmp_path)
    promote(store, SYMBOL, STAGED, stage(store, b"model 1"), {})
    promote(store, SYMBOL, STAGED, stage(store, b"model 2"), {})
    candles = tmp_path / "candles" / "BTC_candles.parquet"
    store.write_parquet("candles/BTC_candles.parquet", generate_candles(SYMBOL, minutes=400))
    key = f"production/{SYMBOL}/current.json"
    pointer = json.loads(store.read_text(key))
    pointer[field] = "../../../candles" if field == "version" else ["../../../candles"]
    store.write_text(key, json.dumps(pointer))
    before = tree_digest(tmp_path)

    assert crpbot(["rollback", SYMBOL, "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"crpbot rollback: {tmp_path}/{key}: names version '../../../candles'")
    assert f"Fix: restore {tmp_path}/{key} from a backup, or delete it and promote BTC" in err
    assert crpbot(["predict", SYMBOL, "--root", str(tmp_path), "--candles", str(candles)]) == 1
    assert "names version '../../../candles'" in capsys.readouterr().err
    assert tree_digest(tmp_path) == before  # nothing was changed or deleted

    (tmp_path / key).unlink()  # the fix the message gives
    promote(store, SYMBOL, STAGED, stage(store, b"model 3"), {})
    assert serving_weights(store) == b"model 3"


class SlowStore(LocalStore):
    """The local store with every write slowed, so a promotion's copy and a rollback overlap."""

    def write_bytes(self, key: str, data: bytes) -> None:
        time.sleep(0.01)
        super().write_bytes(key, data)


def test_a_rollback_racing_a_promotion_never_leaves_current_pointing_at_a_deleted_version(
    tmp_path,
):
    store = SlowStore(str(tmp_path))
    for number in (1, 2):
        promote(store, SYMBOL, STAGED, stage(store, f"model {number}".encode()), {})
    for round_number in range(8):
        recorded = stage(store, f"model race {round_number}".encode())
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def racer(action, start=start, errors=errors):
            start.wait()
            try:
                action()
            except PromotionError as error:  # e.g. nothing left to roll back to
                errors.append(error)

        threads = [
            threading.Thread(
                target=racer,
                args=(
                    lambda r=recorded: promote(
                        store, SYMBOL, STAGED, r, {}, holder={"run_id": "promotion"}
                    ),
                ),
            ),
            threading.Thread(
                target=racer,
                args=(lambda: rollback(store, SYMBOL, holder={"command": "crpbot rollback"}),),
            ),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        pointer = read_pointer(store, SYMBOL)
        served = f"production/{SYMBOL}/versions/{pointer.version}"
        assert store.list_keys(served), f"round {round_number}: current.json names deleted {served}"
        for version in pointer.previous:  # every rollback target is still there
            assert store.list_keys(f"production/{SYMBOL}/versions/{version}"), version
        assert not store.exists(claim_key(SYMBOL))  # both released their claim
        assert all("no earlier production version" in str(e) for e in errors), errors


def test_a_live_claim_holds_off_rollback_naming_the_holder_on_s3(s3_bucket):
    store = open_store(f"s3://{s3_bucket}/crpbot")
    with (
        symbol_writer_claim(store, SYMBOL, {"run_id": "run-123"}),
        pytest.raises(ClaimError) as info,
        symbol_writer_claim(store, SYMBOL, wait_s=0.2),
    ):
        pytest.fail("a second writer got the claim")
    message = str(info.value)
    assert "run_id run-123" in message and f"pid {os.getpid()}" in message
    assert f"s3://{s3_bucket}/crpbot/production/{SYMBOL}/writer.json" in message
    with symbol_writer_claim(store, SYMBOL, wait_s=0.2):  # released: free again
        pass


def test_a_claim_whose_process_is_gone_is_taken_over_without_a_person(tmp_path):
    store = open_store(tmp_path)
    dead = subprocess.Popen(["true"])  # its pid names no process once it was reaped
    dead.wait()
    record = {"run_id": "killed", "host": socket.gethostname(), "pid": dead.pid}
    store.write_text(claim_key(SYMBOL), json.dumps(record))
    taken = []
    with symbol_writer_claim(store, SYMBOL, {"command": "test"}, wait_s=1.0, log=taken.append):
        assert json.loads(store.read_text(claim_key(SYMBOL)))["pid"] == os.getpid()
    assert "taking over the stale claim of run_id killed" in taken[0]
