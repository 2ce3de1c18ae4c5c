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
that is down neither crashes the sensor nor loses the alert).

The webhook URL is a secret (Slack's carries its token in the path): it is never logged. Each
tick reads and checks the setting once, before anything is sent (`load_webhook`): an unusable
value is named in the tick's summary and the log, by the setting's name and the problem, never
its path or query, and the alerts wait in the cursor until it is fixed. Any error while sending
means "not delivered": the alert stays pending and the sensor goes on.

Delivery is at least once. A POST is never re-sent as a GET: a redirect is a failed delivery that
names the host it points to. A receiver that takes a message but answers after
WEBHOOK_TIMEOUT_SECONDS (or answers an error) gets the same alert again on a later tick: at most
one POST per alert and tick (ticks are at least 30 s apart) and at most MAX_ATTEMPTS in all. Every
POST of one alert carries the same `alert_id` (also as the Idempotency-Key header) and its
`attempt` number, so a receiver can drop repeats; a human reader sees "delivery attempt N".
"""

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.message import Message

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from crpbot_assets.checks import PROFIT_CHECK_NAME
from crpbot_assets.monitor import MONITOR_ASSET as MONITOR_ASSET_NAME
from crpbot_assets.monitor import MONITOR_CHECK_NAMES
from v8_model.evaluation.gates import GATE_NAMES
from v8_model.record import strict_json

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

    @property
    def alert_id(self) -> str:
        """The same for every delivery of this alert, different for any other alert (one check
        execution per run, partition and check): the key a receiver de-duplicates by."""
        return f"crpbot:{self.run_id}:{self.symbol}:{self.gate}"

    def text(self) -> str:
        figures = f" [{self.shown_details}]" if self.details else ""
        return (
            f"crpbot V8 {'monitor check' if self.monitoring else 'gate'} failed: "
            f"{self.symbol} {self.gate} = {self.shown_value} "
            f"(threshold: {self.threshold or 'n/a'}){figures}; run {self.run_id}: {self.run_url}"
        )

    def slack_payload(self, attempt: int = 1) -> dict:
        """Slack incoming-webhook JSON: `text` for notifications, blocks for the layout;
        `alert_id` and `attempt` let a receiver tell a repeated delivery from a new alert."""
        repeat = f" (delivery attempt {attempt}, alert {self.alert_id})" if attempt > 1 else ""
        return {
            "alert_id": self.alert_id,
            "attempt": attempt,
            "text": f":rotating_light: {self.text()}{repeat}",
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
        return strict_json(asdict(self), sort_keys=True)


class WebhookError(RuntimeError):
    """The webhook did not accept a message; the text never contains the URL."""


class WebhookSettingError(ValueError):
    """CRPBOT_ALERT_WEBHOOK_URL cannot be used; the text names the setting, never the URL's
    path or query (the secret)."""


# Characters http.client refuses in a request line (controls, space, DEL), found before sending.
def _unsendable_character(url: str) -> str | None:
    for position, character in enumerate(url, start=1):
        if character == " ":
            return f"a space at character {position}"
        if ord(character) < 0x20 or ord(character) == 0x7F:
            return f"a control character (code {ord(character)}) at character {position}"
        if not character.isascii():
            return f"a non-ASCII character at character {position}"
    return None


def load_webhook(value: str | None) -> str | None:
    """The webhook URL from the setting's value, checked before any send; None when unset.

    Raises WebhookSettingError for a value no POST can use, naming the setting and the problem
    and showing at most the scheme and host.
    """
    url = (value or "").strip()
    if not url:
        return None
    fix = f"fix {WEBHOOK_ENV_VAR} (expected https://host/path; its path and query are not shown)"
    bad_character = _unsendable_character(url)
    if bad_character:
        raise WebhookSettingError(
            f"{WEBHOOK_ENV_VAR} contains {bad_character}: percent-encode it (a space is %20) "
            f"or remove it; {fix}"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not 0-65535
    except ValueError:
        # urllib's message may quote the host part, which can hold user:password: not shown.
        raise WebhookSettingError(
            f"{WEBHOOK_ENV_VAR} has a malformed host or port (e.g. an unclosed '[' of an IPv6 "
            f"address, or a port that is not a number up to 65535); {fix}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookSettingError(
            f"{WEBHOOK_ENV_VAR} is not an http(s) URL: expected https://host/path "
            f"(scheme {parts.scheme or 'missing'!r}); {fix}"
        )
    if parts.username is not None or parts.password is not None:
        raise WebhookSettingError(
            f"{WEBHOOK_ENV_VAR} has a user name or password before the host "
            f"({parts.hostname}), which is not sent as credentials; {fix}"
        )
    if port == 0:
        raise WebhookSettingError(f"{WEBHOOK_ENV_VAR} names port 0 on {parts.hostname}; {fix}")
    return url


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib re-sends a POST answered 301/302/303 as a GET without its body, and a 200 to that
    GET would count as delivered. Following none makes a redirect an HTTPError: not delivered."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_RefuseRedirects)


def _redirect_host(url: str, headers: Message) -> str:
    location = headers.get("Location")
    if not location:
        return "no Location given"
    try:
        host = urllib.parse.urlsplit(urllib.parse.urljoin(url, location)).hostname
    except ValueError:
        host = None
    return f"host {host}" if host else "a Location without a host"


def post_webhook(url: str, payload: dict, timeout: float | None = None) -> None:
    """POST `payload` as JSON; any failure raises WebhookError, whose text never has the URL.

    `payload["alert_id"]`, when present, is also sent as the Idempotency-Key header.
    """
    timeout = WEBHOOK_TIMEOUT_SECONDS if timeout is None else timeout
    try:
        url = load_webhook(url) or ""
    except WebhookSettingError as error:
        raise WebhookError(str(error)) from None
    if not url:
        raise WebhookError(f"{WEBHOOK_ENV_VAR} is empty")
    headers = {"Content-Type": "application/json"}
    if "alert_id" in payload:
        headers["Idempotency-Key"] = str(payload["alert_id"])
    request = urllib.request.Request(
        url, data=strict_json(payload).encode("utf-8"), headers=headers, method="POST"
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as error:
        error.close()
        if 300 <= error.code < 400:
            raise WebhookError(
                f"webhook answered HTTP {error.code}, a redirect to "
                f"{_redirect_host(url, error.headers)}: not followed (a POST must not become a "
                f"GET); set {WEBHOOK_ENV_VAR} to the URL it redirects to"
            ) from None
        raise WebhookError(f"webhook answered HTTP {error.code}") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise WebhookError(f"webhook did not answer within {timeout:g} s") from None
        raise WebhookError(f"webhook unreachable: {error.reason}") from None
    except TimeoutError:
        # The receiver may have taken the message: the next try carries the same alert_id.
        raise WebhookError(f"webhook did not answer within {timeout:g} s") from None
    except OSError as error:
        raise WebhookError(f"webhook unreachable: {type(error).__name__}: {error}") from None
    except Exception as error:
        # http.client's InvalidURL and friends quote the URL in their message: only the type.
        raise WebhookError(
            f"webhook not reached: {type(error).__name__} (its message is not shown: it may "
            "quote the URL)"
        ) from None


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
    try:
        webhook, unusable = load_webhook(webhook_url), None
    except WebhookSettingError as error:
        webhook, unusable = None, error
    if webhook is None and unusable is None:
        if new:
            log.info(f"{WEBHOOK_ENV_VAR} is not set: {len(new)} alert(s) logged only")
        return AlertCursor(handled=handled), f"{len(new)} new failed gate(s), logged"
    if unusable is not None:
        # Not a delivery failure: the alerts wait, their attempts unspent, for the fix.
        log.error(f"alerts not sent: {unusable}")

    queue = [*cursor.pending, *({"alert": asdict(alert), "attempts": 0} for alert in new)]
    pending, sent, webhook_down = [], 0, unusable is not None
    for item in queue:
        alert = GateAlert(**item["alert"])
        if webhook_down:  # one failure per tick is enough: do not wait out every timeout
            pending.append(item)
            continue
        attempts = item["attempts"] + 1
        try:
            post(webhook, alert.slack_payload(attempt=attempts))
            sent += 1
        except WebhookError as error:
            webhook_down = True
            if attempts >= MAX_ATTEMPTS:
                log.error(f"giving up on alert after {attempts} attempts ({error}): {alert.text()}")
            else:
                log.warning(f"alert not delivered, will retry ({error}): {alert.text()}")
                pending.append({"alert": item["alert"], "attempts": attempts})
    for item in pending[:-MAX_PENDING]:
        log.error(f"alert queue full, dropping: {GateAlert(**item['alert']).text()}")
    pending = pending[-MAX_PENDING:]
    summary = f"{len(new)} new failed gate(s), {sent} alert(s) sent, {len(pending)} pending"
    if unusable is not None:
        summary += f"; not sent: {unusable}"
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
