"""Production models as immutable versions behind one pointer, switched atomically.

    production/{SYMBOL}/versions/{VERSION}/   the promoted files + promotion.json (their sha256)
    production/{SYMBOL}/current.json          which version serves, and the versions before it

`promote` copies the staged files into a new version folder only after every byte matches the
sha256 that the training step recorded, and switches `current.json` last, in one atomic write:
a reader resolves the pointer first, so it sees the old version or the new one, never a mix, and
a failed promotion leaves production as it was. Earlier versions stay for `rollback`.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from v8_model.layout import (
    PRODUCTION_POINTER_FILE,
    PROMOTION_FILE,
    production_folder,
    production_version_folder,
)
from v8_model.record import strict_json
from v8_model.registry.claims import ClaimError, symbol_writer_claim
from v8_model.storage import Store

KEEP_VERSIONS = 5  # the serving version and up to 4 earlier ones for rollback
# The version names `promote` writes (UTC time, random suffix). A pointer naming anything else
# (e.g. "../../../candles") was not written by promotion and must not steer reads or clean-up.
VERSION_PATTERN = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")


class PromotionError(ValueError):
    """Promotion or rollback refused; the message names the file and what to do."""


@dataclass(frozen=True)
class ProductionPointer:
    symbol: str
    version: str
    previous: tuple[str, ...]  # newest first: where `rollback` goes
    switched_at: str

    def to_json(self) -> str:
        return strict_json(
            {
                "symbol": self.symbol,
                "version": self.version,
                "previous": list(self.previous),
                "switched_at": self.switched_at,
            },
            indent=1,
        )


def file_digest(data: bytes) -> dict[str, int | str]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def folder_digests(store: Store, folder: str) -> dict[str, dict[str, int | str]]:
    """name → {bytes, sha256} for every object under `folder` (names relative to it)."""
    return {
        key.removeprefix(f"{folder}/"): file_digest(store.read_bytes(key))
        for key in store.list_keys(folder)
    }


def _pointer_fix(store: Store, key: str, symbol: str) -> str:
    # Promotion reads the pointer too (for the versions to keep): it cannot overwrite a bad one.
    return (
        f"Fix: restore {store.uri(key)} from a backup, or delete it and promote {symbol} again "
        "(materialize `production_model`)"
    )


def read_pointer(store: Store, symbol: str) -> ProductionPointer | None:
    """The symbol's `current.json`, or None when nothing was promoted yet."""
    key = f"{production_folder(symbol)}/{PRODUCTION_POINTER_FILE}"
    if not store.exists(key):
        return None
    try:
        fields = json.loads(store.read_text(key))
        pointer = ProductionPointer(
            symbol=str(fields["symbol"]),
            version=str(fields["version"]),
            previous=tuple(str(version) for version in fields["previous"]),
            switched_at=str(fields["switched_at"]),
        )
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise PromotionError(
            f"{store.uri(key)}: corrupt production pointer ({error!r}). "
            + _pointer_fix(store, key, symbol)
        ) from error
    names = (pointer.version, *pointer.previous)
    foreign = [name for name in names if not VERSION_PATTERN.fullmatch(name)]
    if foreign:
        raise PromotionError(
            f"{store.uri(key)}: names version {foreign[0]!r}, not a version name promotion writes "
            "(like 20260101T000000Z-0123abcd): the pointer was edited by hand or tampered with. "
            f"Nothing was changed. {_pointer_fix(store, key, symbol)}"
        )
    return pointer


def current_folder(store: Store, symbol: str) -> str | None:
    """The key folder of the version that serves `symbol`, or None when none was promoted."""
    pointer = read_pointer(store, symbol)
    return None if pointer is None else production_version_folder(symbol, pointer.version)


def verify_files(
    store: Store, folder: str, expected: dict[str, dict], *, what: str, fix: str
) -> dict[str, bytes]:
    """The files named in `expected`, each checked against its recorded sha256 and size."""
    files, problems = {}, []
    for name, digest in sorted(expected.items()):
        key = f"{folder}/{name}"
        try:
            data = store.read_bytes(key)
        except FileNotFoundError:
            problems.append(f"{store.uri(key)} is missing")
            continue
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest["sha256"] or len(data) != digest["bytes"]:
            problems.append(
                f"{store.uri(key)} has sha256 {actual[:12]}… ({len(data)} bytes), "
                f"{what} recorded {str(digest['sha256'])[:12]}… ({digest['bytes']} bytes)"
            )
        files[name] = data
    if problems:
        raise PromotionError(f"{'; '.join(problems)}. Nothing was changed. Fix: {fix}")
    return files


def promote(
    store: Store,
    symbol: str,
    staged_folder: str,
    recorded: dict[str, dict],
    record: dict,
    holder: dict[str, str] | None = None,
) -> ProductionPointer:
    """Make the staged files, verified against `recorded`, the symbol's serving version.

    `recorded` is name → {bytes, sha256} as the training step recorded it; `record` goes into the
    version's promotion.json (who trained it, which run promoted it); `holder` is who takes the
    symbol's writer claim (e.g. the Dagster run id). Returns the new pointer.
    """
    with _claimed(store, symbol, holder):
        return _promote(store, symbol, staged_folder, recorded, record)


def _promote(
    store: Store, symbol: str, staged_folder: str, recorded: dict[str, dict], record: dict
) -> ProductionPointer:
    files = verify_files(
        store,
        staged_folder,
        recorded,
        what="the training run",
        fix=f"retrain {symbol} (materialize `model`, then `production_model`)",
    )
    now = datetime.now(UTC)
    version = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    target = production_version_folder(symbol, version)
    for name, data in files.items():
        store.write_bytes(f"{target}/{name}", data)
    promotion = {**record, "symbol": symbol, "version": version, "files": recorded}
    store.write_text(f"{target}/{PROMOTION_FILE}", strict_json(promotion, indent=1))
    # A copy that does not read back as recorded must never become the serving version.
    verify_files(
        store, target, recorded, what="the training run", fix="check the storage root, retry"
    )
    before = read_pointer(store, symbol)
    previous = () if before is None else (before.version, *before.previous)
    pointer = ProductionPointer(
        symbol=symbol,
        version=version,
        previous=previous[: KEEP_VERSIONS - 1],
        switched_at=now.isoformat(timespec="seconds"),
    )
    _switch(store, before, pointer)
    return pointer


def rollback(
    store: Store, symbol: str, holder: dict[str, str] | None = None
) -> tuple[str, ProductionPointer]:
    """Serve the version promoted before the current one; returns (version left, new pointer).

    Takes the symbol's writer claim (`holder` says who), as promotion does.
    """
    with _claimed(store, symbol, holder):
        return _rollback(store, symbol)


@contextmanager
def _claimed(store: Store, symbol: str, holder: dict[str, str] | None) -> Iterator[None]:
    try:
        with symbol_writer_claim(store, symbol, holder):
            yield
    except ClaimError as error:
        raise PromotionError(str(error)) from error


def _rollback(store: Store, symbol: str) -> tuple[str, ProductionPointer]:
    pointer = read_pointer(store, symbol)
    if pointer is None:
        raise PromotionError(
            f"{symbol} has no production model under {store.root}: nothing to roll back"
        )
    if not pointer.previous:
        raise PromotionError(
            f"{symbol} has no earlier production version to roll back to (serving "
            f"{pointer.version}, the only one kept)"
        )
    target_version = pointer.previous[0]
    folder = production_version_folder(symbol, target_version)
    promotion_key = f"{folder}/{PROMOTION_FILE}"
    try:
        recorded = json.loads(store.read_text(promotion_key))["files"]
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError, KeyError) as error:
        raise PromotionError(
            f"{store.uri(promotion_key)}: unreadable ({error!r}); version {target_version} "
            "cannot be served. Nothing was changed."
        ) from error
    verify_files(
        store,
        folder,
        recorded,
        what="its promotion",
        fix=f"promote {symbol} again instead of rolling back",
    )
    new = ProductionPointer(
        symbol=symbol,
        version=target_version,
        previous=pointer.previous[1:],
        switched_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _switch(store, pointer, new)
    return pointer.version, new


def _switch(store: Store, before: ProductionPointer | None, pointer: ProductionPointer) -> None:
    """Write the pointer (one atomic write), then drop the versions `before` named and it does not.

    Only those: a version folder no pointer has named yet may belong to a promotion in flight
    (on another host with a claim taken over, say), and the next pointer may name it. A folder
    left by a promotion that failed after copying stays until removed by hand; it is never served.
    """
    base = production_folder(pointer.symbol)
    store.write_text(f"{base}/{PRODUCTION_POINTER_FILE}", pointer.to_json())
    dropped = set() if before is None else {before.version, *before.previous}
    dropped -= {pointer.version, *pointer.previous}
    for version in sorted(dropped):
        for key in store.list_keys(production_version_folder(pointer.symbol, version)):
            store.delete(key)
