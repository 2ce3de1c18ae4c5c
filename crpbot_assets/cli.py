"""The `crpbot` command.

    crpbot preflight [--role-arn ARN] [--bucket B] [--region R] [--instance-type T] [--symbols ...]
    crpbot sagemaker-request SYMBOL [same flags]
    crpbot predict SYMBOL [--root ROOT] [--candles FILE] [--last N]
    crpbot rollback SYMBOL [--root ROOT]
    crpbot status [SYMBOL] [--root ROOT]
    crpbot promote SYMBOL [--force] [--root ROOT]

Settings come from the environment (see crpbot_assets.sagemaker.settings.ENV_VARS) and the
flags win. Each subcommand is one `add_*_command` function that registers its parser and its
handler, so a new subcommand (e.g. `predict`) is one more function in COMMANDS. Handlers import
what they need when they run, so `crpbot --help` answers without loading torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from v8_model import symbols as symbol_settings
from v8_model.symbols import HOW_TO_ADD, SETTINGS_FILE, SYMBOLS_ENV_VAR, SymbolSettingsError

if TYPE_CHECKING:
    import pandas as pd

    from crpbot_assets.sagemaker.settings import SageMakerSettings

# A handler receives the parsed arguments and returns the exit code.
Handler = Callable[[argparse.Namespace], int]
EXIT_FAILED = 1
EXIT_USAGE = 2


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SageMaker settings (flags beat environment variables)")
    group.add_argument("--role-arn", help="IAM role for the job [CRPBOT_SAGEMAKER_ROLE_ARN]")
    group.add_argument("--bucket", help="S3 bucket [CRPBOT_BUCKET]")
    group.add_argument(
        "--region",
        help="AWS region of the jobs and the bucket [CRPBOT_REGION, else us-east-2; "
        "AWS_REGION / AWS_DEFAULT_REGION are ignored]",
    )
    group.add_argument("--instance-type", help="training instance type [CRPBOT_INSTANCE_TYPE]")
    group.add_argument(
        "--spot",
        action="store_true",
        default=None,
        help="managed spot training [CRPBOT_SAGEMAKER_SPOT]",
    )
    group.add_argument(
        "--keep-alive-seconds",
        type=int,
        help="keep the instance warm this long after each job (warm pool; not with --spot) "
        "[CRPBOT_SAGEMAKER_KEEP_ALIVE_SECONDS]",
    )


def _settings(args: argparse.Namespace) -> SageMakerSettings:
    from crpbot_assets.sagemaker.settings import SageMakerSettings, settings_from_env

    flags = {
        "role_arn": args.role_arn,
        "bucket": args.bucket,
        "region": args.region,
        "instance_type": args.instance_type,
        "use_spot": args.spot,
        "keep_alive_seconds": args.keep_alive_seconds,
    }
    return SageMakerSettings(**settings_from_env(os.environ, flags))


def _symbol(text: str) -> str:
    try:
        known = symbol_settings.SYMBOLS
    except SymbolSettingsError as error:  # a malformed setting: its reason, not argparse's
        raise argparse.ArgumentTypeError(str(error)) from None
    symbol = text.strip().upper()
    if symbol not in known:
        raise argparse.ArgumentTypeError(
            f"unknown symbol {text!r}; known: {', '.join(known)} ({HOW_TO_ADD})"
        )
    return symbol


def _add_root_argument(parser: argparse.ArgumentParser) -> None:
    """--root, shared by the commands that read or write the storage root."""
    parser.add_argument("--root", help="storage root, a folder or s3://bucket/prefix [CRPBOT_ROOT]")


def _symbol_help() -> str:
    """The symbols for --help; a malformed setting must not stop --help from answering."""
    try:
        return f"one of {', '.join(symbol_settings.SYMBOLS)}"
    except SymbolSettingsError:
        return f"one of the symbols in {SETTINGS_FILE.name} or {SYMBOLS_ENV_VAR} (unreadable now)"


def _region_from(args: argparse.Namespace, settings: SageMakerSettings) -> str:
    from crpbot_assets.sagemaker.settings import region_source

    return region_source(settings.region, os.environ, flag=args.region)


def _preflight(args: argparse.Namespace) -> int:
    from crpbot_assets.sagemaker.preflight import run_preflight

    settings = _settings(args)
    symbols = args.symbols or symbol_settings.SYMBOLS
    report = run_preflight(settings, symbols=symbols, region_from=_region_from(args, settings))
    print(report.table())
    print()
    print(report.summary())
    return 0 if report.passed else EXIT_FAILED


def add_preflight_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preflight",
        help="check that a SageMaker run can succeed, before any cost",
        description="Checks credentials, region, bucket, the features files, the role, the "
        "image, the instance quota, and estimates cost and time. Exit 1 lists every failure.",
    )
    _settings_flags(parser)
    parser.add_argument(
        "--symbols", nargs="+", type=_symbol, help="symbols to check (default: every symbol)"
    )
    parser.set_defaults(handler=_preflight)


def _sagemaker_request(args: argparse.Namespace) -> int:
    from crpbot_assets.profiles import current_profile
    from crpbot_assets.sagemaker.code_bundle import CodeBundle
    from crpbot_assets.sagemaker.request import build_training_job_request, training_image_uri
    from crpbot_assets.trainers import training_job_name
    from v8_model.config import to_hyperparameters

    settings = _settings(args)
    settings.validate_for_launch()
    request = build_training_job_request(
        settings,
        symbol=args.symbol,
        job_name=training_job_name(args.symbol, "preview"),
        image_uri=training_image_uri(settings),
        code_uri=CodeBundle(settings).uri,
        # What a Dagster run of the current profile (CRPBOT_PROFILE) sends.
        hyperparameters=to_hyperparameters(current_profile().train),
    )
    print(json.dumps(request, indent=2, allow_nan=False))
    # stdout stays pure JSON: with the code bundle uploaded it is a valid standalone job
    # (`aws sagemaker create-training-job --cli-input-json`), trained without Pipes.
    print(
        f"CreateTrainingJob for {args.symbol} in {settings.region} "
        f"(region from {_region_from(args, settings)}): not sent, nothing uploaded; "
        "a Dagster launch adds DAGSTER_PIPES_CONTEXT and DAGSTER_PIPES_MESSAGES to Environment "
        "and its run tags to Tags",
        file=sys.stderr,
    )
    return 0


def add_sagemaker_request_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sagemaker-request",
        help="print the CreateTrainingJob request for SYMBOL without sending it",
        description="Prints, as JSON, the request the SageMaker trainer would send for SYMBOL "
        "with the current settings. Nothing is sent and nothing is uploaded.",
    )
    parser.add_argument("symbol", type=_symbol, help=_symbol_help())
    _settings_flags(parser)
    parser.set_defaults(handler=_sagemaker_request)


def _read_candles(args: argparse.Namespace, root: str) -> pd.DataFrame:
    """The candles to predict on: --candles, else the stored candles of the symbol."""
    import pandas as pd

    from v8_model.layout import candles_key
    from v8_model.storage import open_store

    if args.candles:
        if "://" not in args.candles and not os.path.isfile(args.candles):
            raise FileNotFoundError(
                f"--candles {args.candles} does not exist (or is not a file); pass a parquet "
                "file of 1-minute candles (timestamp, open, high, low, close, volume), or leave "
                f"--candles out to use the stored candles of {args.symbol}"
            )
        return pd.read_parquet(args.candles)
    store = open_store(root)
    key = candles_key(args.symbol)
    if not store.exists(key):
        raise FileNotFoundError(
            f"no candles at {store.uri(key)}; materialize `candles` for {args.symbol} or pass "
            "--candles FILE"
        )
    return store.read_parquet(key)


def _predict(args: argparse.Namespace) -> int:
    import pyarrow
    from botocore.exceptions import BotoCoreError, ClientError

    from crpbot_assets.storage import default_root
    from v8_model.registry.predict import MIN_PREDICT_CANDLES, format_predictions, predict_latest
    from v8_model.storage import UnreadableParquetError

    root = args.root or default_root()
    where = args.candles or f"the stored candles of {args.symbol} under {root}"
    try:
        candles = _read_candles(args, root)
    except FileNotFoundError as error:
        print(f"crpbot predict: {error}", file=sys.stderr)
        return EXIT_FAILED
    except (
        OSError,
        pyarrow.ArrowException,
        UnreadableParquetError,
        BotoCoreError,
        ClientError,
    ) as error:
        # Unreadable or unreachable: say which file, not a pyarrow/botocore traceback.
        print(
            f"crpbot predict: cannot read {where}: {type(error).__name__}: {error}. Fix: check "
            "that the file is a parquet file of candles and that the storage is reachable "
            "(credentials, AWS_ENDPOINT_URL, network)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        # Only the rows needed: the warm-up history plus the predictions asked for.
        predictions = predict_latest(
            root, args.symbol, candles.tail(MIN_PREDICT_CANDLES + args.last - 1)
        )
    except ValueError as error:  # a missing/corrupt model or unusable candles: the user's to fix
        print(f"crpbot predict: {error}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, BotoCoreError, ClientError) as error:
        print(
            f"crpbot predict: cannot read the production model under {root}: "
            f"{type(error).__name__}: {error}. Fix: check that the storage is reachable",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(format_predictions(predictions.tail(args.last)))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of rows >= 1, got {text!r}")
    return value


def add_predict_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="SELL/HOLD/BUY probabilities from SYMBOL's production model",
        description="Loads production/{SYMBOL}/ (model and processor) from the storage root "
        "and predicts on the latest candles (the stored candles/{SYMBOL}_candles.parquet, or "
        "--candles).",
    )
    parser.add_argument("symbol", type=_symbol, help=_symbol_help())
    _add_root_argument(parser)
    parser.add_argument("--candles", help="a parquet file of 1-minute candles to predict on")
    parser.add_argument(
        "--last", type=_positive_int, default=10, help="how many latest rows to print (>= 1)"
    )
    parser.set_defaults(handler=_predict)


def _rollback(args: argparse.Namespace) -> int:
    from crpbot_assets.model_registry import move_champion
    from crpbot_assets.storage import default_root
    from v8_model.registry.promotion import PromotionError, rollback
    from v8_model.storage import open_store

    root = args.root or default_root()
    store = open_store(root)
    try:
        left, pointer = rollback(store, args.symbol, holder={"command": "crpbot rollback"})
    except PromotionError as error:
        print(f"crpbot rollback: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"{args.symbol}: production now serves version {pointer.version} (was {left}); "
        f"{len(pointer.previous)} earlier version(s) left to roll back to"
    )
    # Serving follows the pointer, switched above; the registry's alias follows it or says why not.
    champion = move_champion(args.symbol, storage_root=root, production_version=pointer.version)
    print(champion.line(), file=sys.stdout if champion.alias_moved else sys.stderr)
    return 0


def add_rollback_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rollback",
        help="serve SYMBOL's previously promoted production model again",
        description="Switches production/{SYMBOL}/current.json back to the version promoted "
        "before the current one, after checking its files against their recorded sha256. The "
        "version left is removed. MLflow's crpbot-{SYMBOL}@champion alias then moves to the "
        "registered version of it.",
    )
    parser.add_argument("symbol", type=_symbol, help=_symbol_help())
    _add_root_argument(parser)
    parser.set_defaults(handler=_rollback)


def _status(args: argparse.Namespace) -> int:
    from crpbot_assets.model_registry import CHAMPION_ALIAS, disagreement, read_champion
    from crpbot_assets.storage import default_root
    from v8_model.registry.promotion import PromotionError, read_pointer
    from v8_model.storage import open_store

    root = args.root or default_root()
    store = open_store(root)
    disagreeing = []
    for symbol in [args.symbol] if args.symbol else list(symbol_settings.SYMBOLS):
        try:
            pointer = read_pointer(store, symbol)
        except PromotionError as error:
            print(f"{symbol}: {error}")
            disagreeing.append(symbol)
            continue
        target, champion = read_champion(symbol, storage_root=root)
        serving = None if pointer is None else pointer.version
        shown = "nothing promoted" if pointer is None else f"{serving} since {pointer.switched_at}"
        alias = f"{champion.model}@{CHAMPION_ALIAS}"
        registry = (
            f"version {champion.version} ({champion.production_version})"
            if champion.version is not None
            else "unset"
        )
        why = disagreement(serving, champion)
        print(f"{symbol}: pointer {shown}; {alias} {registry} [{target.shown}]")
        print(f"  {'DISAGREE: ' + why if why else 'registry and pointer agree'}")
        if why:
            disagreeing.append(symbol)
    return EXIT_FAILED if disagreeing else 0


def add_status_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status",
        help="which version serves each symbol, and whether MLflow's champion alias agrees",
        description="Shows production/{SYMBOL}/current.json (what serving reads) beside the "
        "MLflow registry's crpbot-{SYMBOL}@champion (MLFLOW_TRACKING_URI, else the embedded "
        "store under the storage root). Exit 1 when they disagree or the registry is unreadable.",
    )
    parser.add_argument("symbol", nargs="?", type=_symbol, help=f"{_symbol_help()}; default: all")
    _add_root_argument(parser)
    parser.set_defaults(handler=_status)


def _promote(args: argparse.Namespace) -> int:
    import dagster as dg

    from crpbot_assets.definitions import defs

    run_config: dict = {"ops": {"production_model": {"config": {"force": args.force}}}}
    if args.root:
        run_config["resources"] = {"storage": {"config": {"root": args.root}}}
    # The staged files' hashes live in the Dagster instance (DAGSTER_HOME) that trained them.
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("symbol_pipeline").execute_in_process(
            partition_key=args.symbol,
            instance=instance,
            run_config=run_config,
            asset_selection=[dg.AssetKey("production_model")],
            raise_on_error=False,
        )
    if not result.success:
        from crpbot_assets.symbol_run import failure_summary

        print(f"crpbot promote: {failure_summary(result)}", file=sys.stderr)
        return EXIT_FAILED
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    forced = " (forced over a better champion)" if metadata["forced"].value else ""
    print(
        f"{args.symbol}: production now serves version {metadata['version'].value}{forced}; "
        f"{metadata['reason'].value}"
    )
    return 0


def add_promote_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "promote",
        help="promote SYMBOL's latest trained model (materialize `production_model`)",
        description="Promotes the model that `model` last trained for SYMBOL, in the Dagster "
        "instance of DAGSTER_HOME, after its gates and file hashes are checked. A challenger "
        "significantly worse than the serving champion on their shared unseen rows is refused "
        "unless --force is given; a forced promotion is recorded in its promotion.json.",
    )
    parser.add_argument("symbol", type=_symbol, help=_symbol_help())
    parser.add_argument(
        "--force",
        action="store_true",
        help="promote even when the challenger is significantly worse than the champion",
    )
    _add_root_argument(parser)
    parser.set_defaults(handler=_promote)


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_preflight_command,
    add_sagemaker_request_command,
    add_predict_command,
    add_rollback_command,
    add_status_command,
    add_promote_command,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crpbot", description="crpbot V8 training platform")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def _user_error(command: str, error: Exception) -> int:
    # Settings are the user's to fix: one clear message, no traceback.
    print(f"crpbot {command}: {error}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # Imported here, not at the top: importing the SageMaker package reads the symbols
        # setting, and a malformed one must still leave `crpbot --help` working.
        from crpbot_assets.sagemaker.settings import SettingsError

        try:
            return args.handler(args)
        except (SettingsError, ValidationError) as error:
            return _user_error(args.command, error)
    except SymbolSettingsError as error:
        return _user_error(args.command, error)


if __name__ == "__main__":
    raise SystemExit(main())
