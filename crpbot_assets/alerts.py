"""Alerts for failed gates: a sensor that reads the check history and posts to a webhook.

Open-source Dagster has no "check failed" sensor, so this one reads the execution history of the
gate checks on `model` (the five form gates and `directional_skill`), of `backtest`'s
`profitable_after_costs` and of `model_monitor`'s `realized_skill`, `feature_drift` and
`model_age` from the instance and, for each failure it has not handled yet, logs the
alert and POSTs one Slack-compatible JSON message (symbol, gate, value, threshold, the check's
other figures such as the skill interval or the backtest returns, run link) to
CRPBOT_ALERT_WEBHOOK_URL when set.

The cursor remembers which check executions were handled (so a restart does not re-send) and
keeps alerts the webhook did not accept, retried on later ticks up to MAX_ATTEMPTS (so a webhook
that is down neither crashes the sensor nor loses the alert). The webhook URL is a secret: it is
never logged.
"""

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from crpbot_assets.checks import PROFIT_CHECK_NAME
from crpbot_assets.monitor import MONITOR_ASSET as MONITOR_ASSET_NAME
from crpbot_assets.monitor import MONITOR_CHECK_NAMES
from v8_model.gates import GATE_NAMES

WEBHOOK_ENV_VAR = "CRPBOT_ALERT_WEBHOOK_URL"
UI_URL_ENV_VAR = "CRPBOT_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:3000"
MODEL_ASSET = dg.AssetKey("model")
BACKTEST_ASSET = dg.AssetKey("backtest")
MONITOR_ASSET = dg.AssetKey(MONITOR_ASSET_NAME)
# Every check whose failure is alerted: the gates on `model`, the profit check on `backtest`,
# the monitor's checks on the serving model.
ALERTED_CHECKS = (
    *(dg.AssetCheckKey(MODEL_ASSET, gate) for gate in GATE_NAMES),
    dg.AssetCheckKey(BACKTEST_ASSET, PROFIT_CHECK_NAME),
    *(dg.AssetCheckKey(MONITOR_ASSET, name) for name in MONITOR_CHECK_NAMES),
)
MAX_DETAILS = 16  # figures carried per alert besides value and threshold

HISTORY_PER_GATE = 20  # newest executions read per check and tick
# Handled ids kept: enough to cover every id a tick can read (see `_new_failures`).
HANDLED_KEPT = HISTORY_PER_GATE * len(ALERTED_CHECKS)
MAX_ATTEMPTS = 20  # deliveries tried per alert before it is given up (and logged as such)
MAX_PENDING = 100
WEBHOOK_TIMEOUT_SECONDS = 5.0
FAILED = AssetCheckExecutionRecordStatus.FAILED


@dataclass(frozen=True)
class GateAlert:
    execution_id: int
    symbol: str
    gate: str
    value: float | None
    threshold: str | None
    run_id: str
    run_url: str
    # The check's other numbers (the skill's interval and p-value, the backtest's returns).
    details: dict[str, float] = field(default_factory=dict)
    asset: str = MODEL_ASSET.path[-1]  # a monitor check's alert is about the serving model

    @property
    def monitoring(self) -> bool:
        return self.asset == MONITOR_ASSET_NAME

    @property
    def shown_value(self) -> str:
        return "n/a" if self.value is None else f"{self.value:.6g}"

    @property
    def shown_details(self) -> str:
        return ", ".join(f"{name}={value:.6g}" for name, value in self.details.items())

    def text(self) -> str:
        figures = f" [{self.shown_details}]" if self.details else ""
        return (
            f"crpbot V8 {'monitor check' if self.monitoring else 'gate'} failed: "
            f"{self.symbol} {self.gate} = {self.shown_value} "
            f"(threshold: {self.threshold or 'n/a'}){figures}; run {self.run_id}: {self.run_url}"
        )

    def slack_payload(self) -> dict:
        """Slack incoming-webhook JSON: `text` for notifications, blocks for the layout."""
        return {
            "text": f":rotating_light: {self.text()}",
            "blocks": [
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": f":rotating_light: *{self.symbol}*: "
                        + (
                            f"monitor check *{self.gate}* failed on the serving model."
                            if self.monitoring
                            else f"gate *{self.gate}* failed; the model will not be promoted."
                        ),
                    },
                },
                {
                    "type": "section",
                    "fields": [
                        {"type": "mrkdwn", "text": f"*Symbol*\n{self.symbol}"},
                        {"type": "mrkdwn", "text": f"*Gate*\n{self.gate}"},
                        {"type": "mrkdwn", "text": f"*Value*\n{self.shown_value}"},
                        {"type": "mrkdwn", "text": f"*Threshold*\n{self.threshold or 'n/a'}"},
                        {"type": "mrkdwn", "text": f"*Run*\n<{self.run_url}|{self.run_id[:8]}>"},
                    ],
                },
                *(
                    [{"type": "section", "text": {"type": "mrkdwn", "text": self.shown_details}}]
                    if self.details
                    else []
                ),
            ],
            "figures": dict(self.details),
        }


@dataclass
class AlertCursor:
    handled: list[int] = field(default_factory=list)  # check execution ids already handled
    pending: list[dict] = field(default_factory=list)  # {"alert": GateAlert fields, "attempts"}

    @classmethod
    def from_json(cls, text: str | None) -> "AlertCursor":
        return cls(**json.loads(text)) if text else cls()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class WebhookError(RuntimeError):
    """The webhook did not accept a message; the text never contains the URL."""


def post_webhook(url: str, payload: dict, timeout: float = WEBHOOK_TIMEOUT_SECONDS) -> None:
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # urllib's own error would quote the URL, and the URL is the secret.
        raise WebhookError(
            f"{WEBHOOK_ENV_VAR} is not an http(s) URL: expected https://host/path "
            f"(scheme {parts.scheme or 'missing'!r}); fix the setting"
        )
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as error:
        raise WebhookError(f"webhook answered HTTP {error.code}") from None
    except urllib.error.URLError as error:
        raise WebhookError(f"webhook unreachable: {error.reason}") from None
    except (TimeoutError, OSError) as error:
        raise WebhookError(f"webhook unreachable: {type(error).__name__}: {error}") from None


def _metadata_value(metadata: dict, key: str) -> object:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _new_failures(instance: dg.DagsterInstance, handled: set[int], ui_url: str) -> list[GateAlert]:
    """Failed gate executions among the newest HISTORY_PER_GATE per gate not yet handled.

    Ids are assigned when a check is planned, not when it finishes, so a cursor of "the highest id
    seen" could skip a slow run's failure; remembering the handled ids does not. Any id read here
    is among the newest HANDLED_KEPT failures, so keeping that many handled ids is enough.
    """
    alerts = []
    for check_key in ALERTED_CHECKS:
        records = instance.event_log_storage.get_asset_check_execution_history(
            check_key, limit=HISTORY_PER_GATE
        )
        for record in records:
            # Only executed evaluations: a run that failed upstream leaves its checks PLANNED
            # (no `passed`, nothing measured), and those are not gate failures.
            if record.id in handled or record.status is not FAILED:
                continue
            evaluation = record.evaluation
            metadata = dict(evaluation.metadata or {})
            value = _metadata_value(metadata, "value")
            threshold = _metadata_value(metadata, "threshold")
            details = {
                key: float(number)
                for key in metadata
                if key not in ("value", "threshold")
                and isinstance(number := _metadata_value(metadata, key), int | float)
                and not isinstance(number, bool)
            }
            alerts.append(
                GateAlert(
                    execution_id=record.id,
                    symbol=record.partition or evaluation.partition or "?",
                    gate=check_key.name,
                    value=float(value) if isinstance(value, int | float) else None,
                    threshold=None if threshold is None else str(threshold),
                    run_id=record.run_id,
                    run_url=f"{ui_url.rstrip('/')}/runs/{record.run_id}",
                    details=dict(list(details.items())[:MAX_DETAILS]),
                    asset=check_key.asset_key.path[-1],
                )
            )
    return sorted(alerts, key=lambda alert: alert.execution_id)


def process_gate_alerts(
    instance: dg.DagsterInstance,
    cursor: AlertCursor,
    *,
    webhook_url: str | None,
    ui_url: str,
    log: dg.DagsterLogManager | logging.Logger,
    post: Callable[[str, dict], None] = post_webhook,
) -> tuple[AlertCursor, str]:
    """One sensor tick: log new failures and deliver what is due; returns cursor and summary."""
    new = _new_failures(instance, set(cursor.handled), ui_url)
    for alert in new:
        log.warning(alert.text())
    handled = sorted({*cursor.handled, *(alert.execution_id for alert in new)})[-HANDLED_KEPT:]
    if not webhook_url:
        if new:
            log.info(f"{WEBHOOK_ENV_VAR} is not set: {len(new)} alert(s) logged only")
        return AlertCursor(handled=handled), f"{len(new)} new failed gate(s), logged"

    queue = [*cursor.pending, *({"alert": asdict(alert), "attempts": 0} for alert in new)]
    pending, sent, webhook_down = [], 0, False
    for item in queue:
        alert = GateAlert(**item["alert"])
        if webhook_down:  # one failure per tick is enough: do not wait out every timeout
            pending.append(item)
            continue
        try:
            post(webhook_url, alert.slack_payload())
            sent += 1
        except WebhookError as error:
            webhook_down = True
            attempts = item["attempts"] + 1
            if attempts >= MAX_ATTEMPTS:
                log.error(f"giving up on alert after {attempts} attempts ({error}): {alert.text()}")
            else:
                log.warning(f"alert not delivered, will retry ({error}): {alert.text()}")
                pending.append({"alert": item["alert"], "attempts": attempts})
    for item in pending[:-MAX_PENDING]:
        log.error(f"alert queue full, dropping: {GateAlert(**item['alert']).text()}")
    pending = pending[-MAX_PENDING:]
    summary = f"{len(new)} new failed gate(s), {sent} alert(s) sent, {len(pending)} pending"
    return AlertCursor(handled=handled, pending=pending), summary


@dg.sensor(
    name="gate_failure_alerts",
    description="Posts each failed model gate to CRPBOT_ALERT_WEBHOOK_URL and logs it",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def gate_failure_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    cursor, summary = process_gate_alerts(
        context.instance,
        AlertCursor.from_json(context.cursor),
        webhook_url=os.environ.get(WEBHOOK_ENV_VAR),
        ui_url=os.environ.get(UI_URL_ENV_VAR, DEFAULT_UI_URL),
        log=context.log,
    )
    context.update_cursor(cursor.to_json())
    # The sensor launches no runs; its work is the alerts, so every tick "skips" with a summary.
    return dg.SkipReason(summary)
