"""Where candles come from: the synthetic market, a parquet file, or an exchange download.

The `candles` asset (crpbot_assets.assets.data) picks one by its config (crpbot_assets.configs);
each source returns the candles and a line naming where they came from. The exchange source goes
through the `exchanges` resource, the seam that keeps tests offline."""

import hashlib
from typing import Any

import dagster as dg
import pandas as pd

from crpbot_assets.configs import CandlesConfig
from crpbot_assets.exchange import (
    ExchangeFetchError,
    make_exchange,
    market_for,
    update_candles,
)
from crpbot_assets.profiles import SYNTHETIC_START
from crpbot_assets.storage import (
    StorageResource,
    candles_key,
    staged_candles_key,
)
from v8_model.data.candles import (
    DEFAULT_MIN_ROWS,
    CandleValidationError,
)
from v8_model.data.synthetic import generate_candles
from v8_model.defaults import MINUTES_PER_DAY
from v8_model.storage import UnreadableParquetError, open_store

DATA_VERSION_DIGITS = 16  # of a sha256: unique enough to tell two candle files apart


class ExchangeResource(dg.ConfigurableResource):
    """Opens ccxt exchanges for the `candles` exchange source (public market data, no keys).

    The seam for tests: a subclass whose `build` returns a fake exchange keeps them offline.
    """

    def build(self, name: str) -> Any:
        return make_exchange(name)


def read_parquet_source(source: str) -> pd.DataFrame:
    """A parquet file by path or URI, through the same store code as the root."""
    folder, _, name = source.rstrip("/").rpartition("/")
    try:
        return open_store(folder or ".").read_parquet(name)
    except (FileNotFoundError, UnreadableParquetError) as error:
        raise dg.Failure(
            description=f"candles config path={source!r}: {error}. Nothing was stored. Fix: "
            "point `path` at a parquet file of 1-minute candles (timestamp, open, high, low, "
            "close, volume)"
        ) from error


def validation_failure(error: CandleValidationError) -> dg.Failure:
    return dg.Failure(
        description=str(error),
        metadata={"rule": error.rule, "columns": list(error.columns), "rows": list(error.rows)},
    )


def with_symbol(template: str, symbol: str, setting: str) -> str:
    """`template` with '{symbol}' replaced; any other placeholder is the user's to fix."""
    try:
        return template.format(symbol=symbol)
    except (KeyError, IndexError, ValueError) as error:
        raise dg.Failure(
            description=f"candles config {setting}={template!r}: only the placeholder "
            f"'{{symbol}}' is replaced ({type(error).__name__}: {error}); write literal braces "
            "as '{{' and '}}'"
        ) from error


def parse_max_gap(config: CandlesConfig) -> pd.Timedelta:
    try:
        max_gap = pd.Timedelta(config.max_gap)
    except ValueError as error:
        raise dg.Failure(
            description=f"candles config max_gap={config.max_gap!r} is not a duration: {error}; "
            "write it like '60min' or '3h'"
        ) from error
    if max_gap <= pd.Timedelta(0):
        raise dg.Failure(description=f"candles config max_gap={config.max_gap!r} must be positive")
    return max_gap


def content_version(frame: pd.DataFrame) -> str:
    """A data version from the candles themselves: the same candles give the same version."""
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()[:DATA_VERSION_DIGITS]


def _previous_source(context: dg.AssetExecutionContext, uri: str) -> str | None:
    """The `source` of this partition's latest materialization, when it wrote the file at `uri`."""
    latest = dg.AssetRecordsFilter(
        asset_key=context.asset_key, asset_partitions=[context.partition_key]
    )
    records = context.instance.fetch_materializations(latest, limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    metadata = records[0].asset_materialization.metadata
    if "uri" not in metadata or metadata["uri"].value != uri or "source" not in metadata:
        return None
    return str(metadata["source"].value)


def download_candles(
    context: dg.AssetExecutionContext,
    config: CandlesConfig,
    storage: StorageResource,
    exchanges: ExchangeResource,
    days: int,
) -> dg.MaterializeResult:
    """The exchange source: append the minutes since the stored file's last candle."""
    symbol = context.partition_key
    key = candles_key(symbol)
    uri = storage.store.uri(key)
    staged = staged_candles_key(symbol)
    market = with_symbol(config.market, symbol, "market") if config.market else market_for(symbol)
    source = f"exchange {config.exchange} {market}"
    previous = _previous_source(context, uri)
    held = [name for name in (key, staged) if storage.store.exists(name)]
    if previous is not None and previous != source and held:
        # The download appends to the stored file: it must never extend candles of another origin.
        where = " and ".join(storage.store.uri(name) for name in held)
        raise dg.Failure(
            description=f"{where} holds candles from {previous}, not from {source}; downloading "
            f"would append to them. Delete {where} (the download then starts from `start`), or "
            "use another storage root for exchange candles.",
            metadata={"stored_source": previous, "source": source},
        )
    start = config.start or pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=days)
    max_gap = parse_max_gap(config)
    try:
        client = exchanges.build(config.exchange)
    except (ImportError, ValueError) as error:  # ccxt missing (an optional extra), unknown id
        raise dg.Failure(
            description=f"cannot open exchange {config.exchange!r}: {error}"
        ) from error
    if not storage.store.exists(staged) and storage.store.exists(key):
        # The download extends a copy of the published candles; they stay as they are until
        # `features` has audited the result.
        storage.store.write_bytes(staged, storage.store.read_bytes(key))
    try:
        update = update_candles(
            storage.store,
            staged,
            client,
            market,
            start=start,
            max_gap=max_gap,
            log=context.log.info,
        )
    except CandleValidationError as error:
        raise validation_failure(error) from error
    except ExchangeFetchError as error:
        raise dg.Failure(
            description=str(error),
            metadata={
                "market": error.market,
                "since": str(error.since),
                "attempts": error.attempts,
            },
        ) from error
    # update_candles validated every page before storing it; what it cannot know is whether
    # the file now holds enough history for a feature window and a label.
    if update.rows < DEFAULT_MIN_ROWS:
        raise dg.Failure(
            description=f"{uri} holds {update.rows} candles of {market} after the download; "
            f"the features need at least {DEFAULT_MIN_ROWS}. Set an earlier `start` (now "
            f"{update.requested_from}) or check that {config.exchange} has {market} candles.",
            metadata=update.as_metadata(),
        )
    return dg.MaterializeResult(
        metadata={
            "source": source,
            **update.as_metadata(),
            "uri": uri,
            "staged_uri": storage.store.uri(staged),
        },
        data_version=dg.DataVersion(update.data_version),
    )


def synthetic_candles(
    symbol: str, config: CandlesConfig, *, days: int, seed: int
) -> tuple[str, pd.DataFrame]:
    """The synthetic market's candles (config's seed, else the profile's), and their source."""
    seed = seed if config.seed is None else config.seed
    frame = generate_candles(
        symbol,
        start=config.start or SYNTHETIC_START,
        minutes=days * MINUTES_PER_DAY,
        seed=seed,
        signal=config.signal,
        volatility_clustering=config.volatility_clustering,
    )
    return f"synthetic(days={days}, seed={seed}, signal={config.signal})", frame


def parquet_candles(symbol: str, config: CandlesConfig) -> tuple[str, pd.DataFrame]:
    """The candles of the parquet file at config's `path` ('{symbol}' replaced), and its URI."""
    if not config.path:
        raise dg.Failure(description="candles config source='parquet' needs a `path`")
    source = with_symbol(config.path, symbol, "path")
    return source, read_parquet_source(source)
