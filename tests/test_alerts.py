"""The gate-failure alert sensor, against check results recorded in a real (temporary) instance.

A stand-in `model` asset with the real gate check specs reports chosen gate results, so the
history the sensor reads is exactly what a training run leaves, without training.
"""

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator

import dagster as dg
import pytest

from crpbot_assets import alerts
from crpbot_assets.alerts import (
    UI_URL_ENV_VAR,
    WEBHOOK_ENV_VAR,
    AlertCursor,
    gate_failure_alerts,
    process_gate_alerts,
)
from crpbot_assets.checks import GATE_CHECK_SPECS
from crpbot_assets.partitions import symbol_partitions
from v8_model.evaluation.gates import GATE_NAMES


class GateOutcomes(dg.Config):
    failing: dict[str, float] = {}  # gate name → measured value


class UpstreamOutcome(dg.Config):
    fail: bool = False


@dg.asset(name="features", partitions_def=symbol_partitions)
def stand_in_features(config: UpstreamOutcome) -> None:
    if config.fail:
        raise dg.Failure(description="upstream failed on purpose")


@dg.asset(
    name="model",
    partitions_def=symbol_partitions,
    check_specs=GATE_CHECK_SPECS,
    deps=[stand_in_features],
)
def stand_in_model(config: GateOutcomes):
    yield dg.MaterializeResult()
    for gate in GATE_NAMES:
        yield dg.AssetCheckResult(
            check_name=gate,
            passed=gate not in config.failing,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"value": config.failing.get(gate, 0.5), "threshold": f"{gate} threshold"},
        )


def record_gates(instance: dg.DagsterInstance, symbol: str, failing: dict[str, float]) -> str:
    result = dg.materialize(
        [stand_in_model, stand_in_features],
        selection=[stand_in_model],
        partition_key=symbol,
        instance=instance,
        run_config={"ops": {"model": {"config": {"failing": failing}}}},
        raise_on_error=False,
    )
    assert result.success == (not failing)
    return result.run_id


def tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[str, str]:
    """One sensor evaluation, as the daemon runs it; returns (skip message, new cursor)."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    skip = gate_failure_alerts(context)
    assert isinstance(skip, dg.SkipReason)
    return skip.skip_message, context.cursor


@pytest.fixture
def alert_env(monkeypatch, webhook):
    monkeypatch.setenv(WEBHOOK_ENV_VAR, webhook.url)
    monkeypatch.setenv(UI_URL_ENV_VAR, "http://ui.test:3000")
    return webhook


def test_each_failed_gate_is_posted_once_with_its_facts(dagster_instance, alert_env):
    run_id = record_gates(dagster_instance, "BTC", {"logit_range": 244.65, "class_balance": 0.7})
    record_gates(dagster_instance, "ETH", {})  # all gates pass: no alert

    summary, cursor = tick(dagster_instance, None)
    assert summary == "2 new failed gate(s), 2 alert(s) sent, 0 pending"
    assert len(alert_env.messages) == 2
    by_gate = {m["blocks"][1]["fields"][1]["text"].split("\n")[1]: m for m in alert_env.messages}
    assert set(by_gate) == {"logit_range", "class_balance"}
    message = by_gate["logit_range"]
    assert "BTC logit_range = 244.65" in message["text"]
    assert "threshold: logit_range threshold" in message["text"]
    assert f"http://ui.test:3000/runs/{run_id}" in message["text"]
    assert "ETH" not in json.dumps(alert_env.messages)

    # The next tick, or a restarted daemon resuming from the stored cursor, sends nothing again.
    summary, cursor = tick(dagster_instance, cursor)
    assert summary.startswith("0 new failed gate(s)")
    assert len(alert_env.messages) == 2

    record_gates(dagster_instance, "SOL", {"no_nan_inf": 12.0})
    tick(dagster_instance, cursor)
    assert len(alert_env.messages) == 3
    assert "SOL no_nan_inf = 12" in alert_env.messages[-1]["text"]


def test_webhook_down_keeps_the_alert_and_delivers_it_later(dagster_instance, alert_env):
    record_gates(dagster_instance, "BTC", {"logit_range": 99.0})
    alert_env.status = 500
    summary, cursor = tick(dagster_instance, None)
    assert summary == "1 new failed gate(s), 0 alert(s) sent, 1 pending"
    assert alert_env.messages == []
    assert AlertCursor.from_json(cursor).pending[0]["attempts"] == 1

    alert_env.status = 200
    summary, cursor = tick(dagster_instance, cursor)
    assert summary == "0 new failed gate(s), 1 alert(s) sent, 0 pending"
    assert len(alert_env.messages) == 1 and "logit_range = 99" in alert_env.messages[0]["text"]
    tick(dagster_instance, cursor)
    assert len(alert_env.messages) == 1


def test_unreachable_webhook_neither_crashes_nor_leaks_the_url(
    dagster_instance, monkeypatch, caplog
):
    with socket.socket() as probe:  # a port that nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret_url = f"http://127.0.0.1:{port}/services/T000/SECRET-TOKEN"
    record_gates(dagster_instance, "ETH", {"confidence_calibration": 0.4})
    logger = logging.getLogger("test_alerts")
    with caplog.at_level(logging.INFO, logger="test_alerts"):
        cursor, summary = process_gate_alerts(
            dagster_instance, AlertCursor(), webhook_url=secret_url, ui_url="http://ui", log=logger
        )
    assert summary == "1 new failed gate(s), 0 alert(s) sent, 1 pending"
    assert "ETH confidence_calibration = 0.4" in caplog.text
    assert "webhook unreachable" in caplog.text
    assert "SECRET-TOKEN" not in caplog.text and str(port) not in caplog.text.replace(
        "http://ui", ""
    )


def test_retries_are_bounded(dagster_instance, monkeypatch, caplog, alert_env):
    monkeypatch.setattr(alerts, "MAX_ATTEMPTS", 3)
    record_gates(dagster_instance, "BTC", {"logit_range": 20.0})
    alert_env.status = 503
    cursor = AlertCursor()
    logger = logging.getLogger("test_alerts")
    with caplog.at_level(logging.INFO, logger="test_alerts"):
        for _ in range(3):
            cursor, summary = process_gate_alerts(
                dagster_instance, cursor, webhook_url=alert_env.url, ui_url="http://ui", log=logger
            )
    assert cursor.pending == []
    assert "giving up on alert after 3 attempts (webhook answered HTTP 503)" in caplog.text
    assert "BTC logit_range = 20" in caplog.text


def test_a_late_failure_below_the_newest_handled_id_is_still_alerted(dagster_instance):
    """Check ids are assigned when a run plans its checks: a slow run may finish after a newer."""
    record_gates(dagster_instance, "BTC", {"logit_range": 30.0})
    record_gates(dagster_instance, "ETH", {"logit_range": 40.0})
    history = dagster_instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("model"), "logit_range"), limit=2
    )
    newest, older = history  # newest first
    assert newest.partition == "ETH"
    sent = []
    cursor, _ = process_gate_alerts(
        dagster_instance,
        AlertCursor(handled=[newest.id]),  # as if ETH's run had finished and been alerted first
        webhook_url="http://127.0.0.1:9/unused",
        ui_url="http://ui",
        log=logging.getLogger("test_alerts"),
        post=lambda url, payload: sent.append(payload["text"]),
    )
    assert len(sent) == 1 and "BTC logit_range = 30" in sent[0]
    assert set(cursor.handled) == {newest.id, older.id}


def run_failing_upstream(instance: dg.DagsterInstance, symbol: str) -> None:
    """A run whose `features` fails: the gate checks of `model` stay planned, never executed."""
    result = dg.materialize(
        [stand_in_features, stand_in_model],
        partition_key=symbol,
        instance=instance,
        run_config={"ops": {"features": {"config": {"fail": True}}}},
        raise_on_error=False,
    )
    assert not result.success


def test_alerts_survive_runs_that_failed_upstream(dagster_instance, alert_env):
    run_failing_upstream(dagster_instance, "BTC")  # planned-only gate records, first
    record_gates(dagster_instance, "ETH", {})  # executed and passed
    record_gates(dagster_instance, "SOL", {"class_balance": 0.8})  # executed and failed
    run_failing_upstream(dagster_instance, "ETH")  # planned-only records, newest
    history = dagster_instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("model"), "class_balance"), limit=10
    )
    assert {record.status.value for record in history} == {"PLANNED", "SUCCEEDED", "FAILED"}

    summary, cursor = tick(dagster_instance, None)
    assert summary == "1 new failed gate(s), 1 alert(s) sent, 0 pending"
    assert len(alert_env.messages) == 1
    assert "SOL class_balance = 0.8" in alert_env.messages[0]["text"]

    # A later failure, after more upstream failures, is still posted: the sensor keeps working.
    run_failing_upstream(dagster_instance, "SOL")
    record_gates(dagster_instance, "BTC", {"logit_range": 31.0, "no_nan_inf": 3.0})
    summary, _ = tick(dagster_instance, cursor)
    assert summary == "2 new failed gate(s), 2 alert(s) sent, 0 pending"
    assert [m["text"].split(" = ")[0].split(": ")[-1] for m in alert_env.messages[1:]] == [
        "BTC logit_range",
        "BTC no_nan_inf",
    ]


@pytest.mark.parametrize(
    "bad_url", ["hooks.example.test/services/SECRET-TOKEN", "ftp://x/SECRET-TOKEN"]
)
def test_a_webhook_url_without_http_scheme_is_named_not_leaked(dagster_instance, caplog, bad_url):
    record_gates(dagster_instance, "BTC", {"logit_range": 50.0})
    logger = logging.getLogger("test_alerts")
    with caplog.at_level(logging.INFO, logger="test_alerts"):
        cursor, summary = process_gate_alerts(
            dagster_instance, AlertCursor(), webhook_url=bad_url, ui_url="http://ui", log=logger
        )  # the tick completes: no exception
    assert summary.startswith("1 new failed gate(s), 0 alert(s) sent, 1 pending; not sent: ")
    assert f"{WEBHOOK_ENV_VAR} is not an http(s) URL" in caplog.text
    assert "SECRET-TOKEN" not in caplog.text and "SECRET-TOKEN" not in summary
    assert "SECRET-TOKEN" not in cursor.to_json()


def secret_free(*texts: str) -> bool:
    return not any("SECRET" in text or "TOKEN123" in text for text in texts)


@pytest.mark.parametrize(
    ("bad_url", "problem"),
    [
        ("http://127.0.0.1:18081/hooks/SECRET TOKEN123", "contains a space at character 36"),
        ("http://127.0.0.1:18081/hooks/SECRET\nTOKEN123", "contains a control character (code 10)"),
        ("http://[::1/hooks/SECRET", "has a malformed host or port"),
        ("http://127.0.0.1:99999/hooks/SECRET", "has a malformed host or port"),
        ("https://bot:SECRET@hooks.example.test/T0", "has a user name or password before the host"),
        ("https://hooks.example.test/T0/SECRET-caf\u00e9", "contains a non-ASCII character"),
    ],
)
def test_an_unusable_webhook_url_is_named_by_its_setting_and_alerts_wait_for_the_fix(
    dagster_instance, monkeypatch, capfd, webhook, bad_url, problem
):
    """The URLs that crashed the sensor (http.client's InvalidURL, urllib's ValueError) and
    printed the secret: each tick now completes, names the setting and the problem, and keeps
    the alert until the setting is fixed; the cursor moves on, so later failures are seen."""
    record_gates(dagster_instance, "BTC", {"logit_range": 61.0})
    monkeypatch.setenv(WEBHOOK_ENV_VAR, bad_url)
    capfd.readouterr()
    summary, cursor = tick(dagster_instance, None)
    daemon_log = capfd.readouterr().err  # what the sensor logs, as the daemon would show it
    assert summary.startswith("1 new failed gate(s), 0 alert(s) sent, 1 pending; not sent: ")
    assert f"{WEBHOOK_ENV_VAR} {problem}" in summary
    assert f"alerts not sent: {WEBHOOK_ENV_VAR} {problem}" in daemon_log
    assert secret_free(summary, cursor, daemon_log), summary
    assert AlertCursor.from_json(cursor).pending[0]["attempts"] == 0  # not a delivery try

    record_gates(dagster_instance, "ETH", {"class_balance": 0.7})
    summary, cursor = tick(dagster_instance, cursor)
    assert summary.startswith("1 new failed gate(s), 0 alert(s) sent, 2 pending; not sent: ")

    monkeypatch.setenv(WEBHOOK_ENV_VAR, webhook.url)
    summary, cursor = tick(dagster_instance, cursor)
    assert summary == "0 new failed gate(s), 2 alert(s) sent, 0 pending"
    assert [m["text"].split(" = ")[0].split(": ")[-1] for m in webhook.messages] == [
        "BTC logit_range",
        "ETH class_balance",
    ]
    tick(dagster_instance, cursor)
    assert len(webhook.messages) == 2


@contextlib.contextmanager
def raw_tcp_receiver(answer: bytes | None) -> Iterator[str]:
    """A listener on 127.0.0.1 that reads one request and answers `answer` raw (not HTTP), or
    closes without a word when it is None: the sending errors urllib does not wrap."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)

        def serve() -> None:
            connection, _ = server.accept()
            with connection:
                # The whole request is read before answering or closing: closing on unread bytes
                # would reset the connection, a different error than the one under test.
                connection.settimeout(10)
                request = b""
                while b"\r\n\r\n" not in request and (chunk := connection.recv(65536)):
                    request += chunk
                head, _, body = request.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(body) < length and (chunk := connection.recv(65536)):
                    body += chunk
                if answer is not None:
                    connection.sendall(answer)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.getsockname()[1]}/hooks/T0/SECRET"
        finally:
            thread.join(timeout=10)


@pytest.mark.parametrize(
    ("answer", "reported"),
    [
        (None, "webhook unreachable: RemoteDisconnected: Remote end closed connection"),
        (b"SECRET garbage\r\n\r\n", "webhook not reached: BadStatusLine (its message is not"),
    ],
)
def test_a_sending_error_of_any_kind_is_not_delivered_and_the_tick_goes_on(
    dagster_instance, caplog, answer, reported
):
    record_gates(dagster_instance, "SOL", {"no_nan_inf": 2.0})
    logger = logging.getLogger("test_alerts")
    with raw_tcp_receiver(answer) as url, caplog.at_level(logging.INFO, logger="test_alerts"):
        cursor, summary = process_gate_alerts(
            dagster_instance, AlertCursor(), webhook_url=url, ui_url="http://ui", log=logger
        )
    assert summary == "1 new failed gate(s), 0 alert(s) sent, 1 pending"
    assert reported in caplog.text
    assert cursor.pending[0]["attempts"] == 1 and cursor.handled
    assert secret_free(caplog.text, summary, cursor.to_json())


def test_a_redirect_is_not_delivered_and_names_only_the_locations_host(
    dagster_instance, capfd, alert_env
):
    """urllib would re-send the POST as a GET without its body, and count the GET's 200 as
    delivered; the alert would be lost. The redirect is a failure; no GET is ever sent."""
    record_gates(dagster_instance, "BTC", {"logit_range": 70.0})
    alert_env.redirect_to = "https://moved.example.test:8443/hooks/T0/SECRET?token=SECRET"
    capfd.readouterr()
    summary, cursor = tick(dagster_instance, None)
    daemon_log = capfd.readouterr().err
    assert summary == "1 new failed gate(s), 0 alert(s) sent, 1 pending"
    assert len(alert_env.posts) == 1 and alert_env.gets == 0 and alert_env.messages == []
    assert "webhook answered HTTP 301, a redirect to host moved.example.test:" in daemon_log
    assert secret_free(daemon_log, summary, cursor)

    alert_env.redirect_to = None
    summary, _ = tick(dagster_instance, cursor)
    assert summary == "0 new failed gate(s), 1 alert(s) sent, 0 pending"
    assert alert_env.gets == 0 and "BTC logit_range = 70" in alert_env.messages[0]["text"]


def test_a_slow_receivers_repeats_carry_one_alert_id_and_stop_at_max_attempts(
    dagster_instance, monkeypatch, alert_env
):
    """A receiver that takes the message but answers after the timeout gets it again on the next
    tick: once per tick, at most MAX_ATTEMPTS times, always with the same alert_id (body and
    Idempotency-Key header) and the attempt number, so it can drop the repeats."""
    monkeypatch.setattr(alerts, "WEBHOOK_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(alerts, "MAX_ATTEMPTS", 3)
    run_id = record_gates(dagster_instance, "BTC", {"logit_range": 80.0, "class_balance": 0.9})
    alert_env.delay_s = 1.0
    cursor = None
    for _ in range(4):
        summary, cursor = tick(dagster_instance, cursor)
    assert summary == "0 new failed gate(s), 0 alert(s) sent, 1 pending"
    # One POST per tick (the first timeout ends the tick): the first alert three times, given
    # up after the third; the other alert once, on the fourth tick.
    first, other = (f"crpbot:{run_id}:BTC:{gate}" for gate in ("class_balance", "logit_range"))
    assert [(m["alert_id"], m["attempt"]) for m in alert_env.messages] == [
        (first, 1),
        (first, 2),
        (first, 3),
        (other, 1),
    ]
    assert [headers["Idempotency-Key"] for headers, _ in alert_env.posts] == [
        m["alert_id"] for m in alert_env.messages
    ]
    assert "delivery attempt" not in alert_env.messages[0]["text"]
    assert f"(delivery attempt 2, alert {first})" in alert_env.messages[1]["text"]

    alert_env.delay_s = 0.0
    summary, cursor = tick(dagster_instance, cursor)
    assert summary == "0 new failed gate(s), 1 alert(s) sent, 0 pending"
    assert alert_env.messages[-1]["attempt"] == 2
