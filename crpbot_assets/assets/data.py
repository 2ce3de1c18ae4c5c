"""Data-stage assets: validated candles, then their 72 features, audited before publishing."""

import dagster as dg

from crpbot_assets.assets.metadata import GROUP, MIB
from crpbot_assets.automation import RETRAIN_CONDITION
from crpbot_assets.checks import (
    audit_features,
)
from crpbot_assets.configs import EXCHANGE, SYNTHETIC, CandlesConfig
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.profiles import (
    ProfileResource,
)
from crpbot_assets.resources import (
    ExchangeResource,
    content_version,
    download_candles,
    parquet_candles,
    parse_max_gap,
    synthetic_candles,
    validation_failure,
)
from crpbot_assets.storage import (
    StorageResource,
    candles_key,
    features_key,
    staged_candles_key,
)
from crpbot_assets.writers import claim_symbol
from v8_model.data.candles import (
    CandleValidationError,
    validate_candles,
)
from v8_model.data.features import FEATURE_NAMES, build_features_dataset

PREVIEW_ROWS = 5
PREVIEW_COLUMNS = ("timestamp", "close", "volume", *FEATURE_NAMES[:4])


@dg.asset(
    partitions_def=symbol_partitions,
    group_name=GROUP,
    kinds={"pandas", "parquet"},
    description="Validated 1-minute OHLCV candles: synthetic market, an existing parquet file, "
    "or an incremental exchange download",
)
def candles(
    context: dg.AssetExecutionContext,
    config: CandlesConfig,
    storage: StorageResource,
    profile: ProfileResource,
    exchanges: ExchangeResource,
) -> dg.MaterializeResult:
    claim_symbol(context)
    symbol = context.partition_key
    settings = profile.get()
    days = config.days or settings.days
    if config.source == EXCHANGE:
        return download_candles(context, config, storage, exchanges, days)
    if config.source == SYNTHETIC:
        source, frame = synthetic_candles(symbol, config, days=days, seed=settings.train.seed)
    else:
        source, frame = parquet_candles(symbol, config)
    try:
        validate_candles(frame, source=source, max_gap=parse_max_gap(config))
    except CandleValidationError as error:
        raise validation_failure(error) from error
    # Refused before writing: the stored candles (which `crpbot predict` reads) stay as they were.
    problems = settings.history_problems(len(frame))
    if problems:
        raise dg.Failure(
            description=f"{source}: {'; '.join(problems)}. Nothing was stored. Fix: supply a "
            "longer history of candles, or choose a profile with a shorter minimum.",
            metadata={"rows": len(frame), "min_rows": settings.min_rows},
        )
    # Staged, not published: `features` publishes the candles once their features pass the audit.
    staged = staged_candles_key(symbol)
    size = storage.store.write_parquet(staged, frame)
    return dg.MaterializeResult(
        metadata={
            "source": source,
            "uri": storage.store.uri(candles_key(symbol)),
            "staged_uri": storage.store.uri(staged),
            "rows": len(frame),
            "MiB": round(size / MIB, 3),
            "first_timestamp": str(frame["timestamp"].iloc[0]),
            "last_timestamp": str(frame["timestamp"].iloc[-1]),
        },
        # Rewriting the same candles keeps the version, so nothing downstream retrains.
        data_version=dg.DataVersion(content_version(frame)),
    )


@dg.asset(
    partitions_def=symbol_partitions,
    deps=[candles],
    group_name=GROUP,
    kinds={"pandas", "parquet"},
    automation_condition=RETRAIN_CONDITION,
    description="timestamp + OHLCV + the 72 features: data/{SYMBOL}_features.parquet",
)
def features(
    context: dg.AssetExecutionContext, storage: StorageResource, profile: ProfileResource
) -> dg.MaterializeResult:
    """Write, audit, publish: the features of the staged candles (a refresh) are checked in
    memory with the features checks; only when all pass are the features and then the candles
    published. A refused refresh is discarded, and the last good candles and features (what the
    trainer and `crpbot predict` read) stay in place."""
    claim_symbol(context)
    symbol = context.partition_key
    store = storage.store
    staged = staged_candles_key(symbol)
    refresh = store.exists(staged)
    dataset = build_features_dataset(store.read_parquet(staged if refresh else candles_key(symbol)))
    failed = [result for result in audit_features(dataset, profile.get()) if not result.passed]
    if failed:
        if refresh:
            store.delete(staged)
        raise dg.Failure(
            description=f"{symbol}: the features of "
            f"{store.uri(staged) if refresh else 'the stored candles'} failed "
            f"{len(failed)} check(s); nothing was published, the last good candles and features "
            "stay in place. "
            + " ".join(f"{result.check_name}: {result.description}" for result in failed),
            metadata={"failed_checks": [result.check_name for result in failed]},
        )
    key = features_key(symbol)
    size = store.write_parquet(key, dataset)
    if refresh:
        store.write_bytes(candles_key(symbol), store.read_bytes(staged))
        store.delete(staged)
    preview = dataset.loc[: PREVIEW_ROWS - 1, list(PREVIEW_COLUMNS)]
    return dg.MaterializeResult(
        metadata={
            "uri": storage.store.uri(key),
            "rows": len(dataset),
            "MiB": round(size / MIB, 3),
            "feature_columns": len(FEATURE_NAMES),
            "first_timestamp": str(dataset["timestamp"].iloc[0]),
            "last_timestamp": str(dataset["timestamp"].iloc[-1]),
            "dagster/column_schema": dg.TableSchema(
                columns=[
                    dg.TableColumn(str(name), str(dtype)) for name, dtype in dataset.dtypes.items()
                ]
            ),
            "preview": dg.MetadataValue.md(preview.to_markdown(index=False, floatfmt=".5g")),
        }
    )
