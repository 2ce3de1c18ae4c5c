"""Shared fixtures: a throw-away Dagster instance, an S3 test server, the SageMaker emulator,
a webhook receiver.

Every server binds 127.0.0.1 on a free port (port 0) and is stopped by its fixture.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import dagster as dg
import pytest
from sagemaker_emulator import SageMakerEmulator, running_emulator

S3_REGION = "us-east-2"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def mlflow_store_of_the_test(monkeypatch, tmp_path) -> None:
    """Tracking stays inside the test: a developer's MLFLOW_TRACKING_URI is ignored, and a run
    with an S3 storage root tracks into a temporary folder, not `<repo>/var/crpbot/mlflow/`."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("crpbot_assets.tracking.LOCAL_DEFAULT_ROOT", tmp_path / "local_root")


@pytest.fixture
def dagster_instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance whose DAGSTER_HOME is this test's temporary folder."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture
def moto_server(monkeypatch) -> Iterator[str]:
    """moto's S3 (and SageMaker, IAM, STS, logs) on 127.0.0.1; returns its endpoint URL.

    The IP address, not `localhost`, keeps S3 on path-style addressing. Dummy credentials and the
    endpoint are set in the environment for this test only, so boto3 clients anywhere reach it.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        yield endpoint
    finally:
        # moto keeps its state per process, not per server: reset it for the next test.
        reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(reset, timeout=10).close()
        server.stop()


@pytest.fixture
def emulator(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[SageMakerEmulator]:
    with running_emulator(moto_server, monkeypatch, tmp_path) as emulated:
        yield emulated


@pytest.fixture
def s3_bucket(moto_server) -> str:
    """An empty bucket on the moto server; returns its name."""
    name = "crpbot-test-bucket"
    boto3.client("s3").create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": S3_REGION}
    )
    return name


class WebhookReceiver:
    """Records JSON POST bodies; `status` is the HTTP status it answers (500 plays "down")."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.status = 200
        self.url = ""


@contextmanager
def serve_webhook() -> Iterator[WebhookReceiver]:
    """An HTTP server on 127.0.0.1 in a thread, recording what is POSTed to it."""
    receiver = WebhookReceiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if receiver.status == 200:
                receiver.messages.append(json.loads(body))
            self.send_response(receiver.status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args) -> None:  # keep test output quiet
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with serve_webhook() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def added_symbol_run(tmp_path_factory) -> dict:
    """The main command as a user runs it, for DOGE added through CRPBOT_SYMBOLS, on synthetic
    data (demo profile), with the repo's instance settings in a fresh DAGSTER_HOME.

    Returns its exit code, stdout, stderr, storage root and DAGSTER_HOME.
    """
    base = tmp_path_factory.mktemp("added_symbol")
    home = base / "home"
    home.mkdir()
    shutil.copy(REPO / ".dagster_home" / "dagster.yaml", home)
    env = {
        **{name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"},
        "CRPBOT_SYMBOLS": "BTC,ETH,SOL,DOGE",
        "CRPBOT_ROOT": str(base / "root"),
        "DAGSTER_HOME": str(home),
        "CRPBOT_PROFILE": "demo",
        "COLUMNS": "80",
    }
    done = subprocess.run(
        [sys.executable, "-m", "crpbot_assets.main", "--symbols", "doge"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return {
        "returncode": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr,
        "root": base / "root",
        "home": home,
    }
