"""Shared fixtures: a throw-away Dagster instance, an S3 test server, the SageMaker emulator,
a webhook receiver.

Every server binds 127.0.0.1 on a free port (port 0) and is stopped by its fixture.
"""

from __future__ import annotations

import collections
import contextlib
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import boto3
import dagster as dg
import pytest
from sagemaker_emulator import SageMakerEmulator, running_emulator
from threadpoolctl import threadpool_limits

from crpbot_assets import warm_trainer

S3_REGION = "us-east-2"
REPO = Path(__file__).resolve().parents[1]
# `make test-fast` leaves these out (`-m "not slow and not integration"`); CI runs everything.
# Modules whose tests train through Dagster or run the main command in a subprocess:
SLOW_MODULES = {
    "test_added_symbol",
    "test_alerts",
    "test_assets",
    "test_assets_bad_data",
    "test_assets_exchange",
    "test_assets_pictures",
    "test_automation",
    "test_backfill",
    "test_config_record",
    "test_entrypoint",
    "test_faults",
    "test_monitor",
    "test_plots",
    "test_postgres_instance",
    "test_run_claims",
    "test_sagemaker_e2e",
    "test_sagemaker_faults",
    "test_sagemaker_first_run",
    "test_symbols",
    "test_tracking",
    "test_tracking_server",
    "test_ui_browser",
    "test_warm_pool",
    "test_warm_trainer",
    "test_worth",
}
# Fixtures that start a server for the test:
SERVER_FIXTURES = {"moto_server", "emulator", "s3_bucket", "html_endpoint", "webhook"}
# A long module with few tests: pytest-xdist hands out the modules with the most tests first, so
# it would come last and run alone for a minute and a half while the other workers stand idle.
# It goes first (`--no-loadscope-reorder` in the Makefile: the order below is the workers').
LONG_MODULES_WITH_FEW_TESTS = ("test_backfill",)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test` runs one worker per core), each worker's torch and the
    trainings it starts use one thread: workers with a thread per core each would spin against
    each other. Set before any test module imports torch; a developer's own setting wins."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        # numpy's and scipy's BLAS loaded with this file's imports, before the line above, and
        # would run a thread per core, spinning against the other workers: the same share now.
        threadpool_limits(int(os.environ["OMP_NUM_THREADS"]))


def _module_name(module: ModuleType) -> str:
    return module.__name__.rsplit(".", 1)[-1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest-xdist's order (modules with the most tests first), the long ones with few before.
    tests_per_module = collections.Counter(_module_name(item.module) for item in items)
    items.sort(
        key=lambda item: (
            _module_name(item.module) not in LONG_MODULES_WITH_FEW_TESTS,
            -tests_per_module[_module_name(item.module)],
        )
    )
    for item in items:
        module = _module_name(item.module)
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if SERVER_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)


class WorkerWarmTrainer:
    """This pytest worker's warm trainer server (`crpbot_assets.warm_trainer`): the trainings that
    the slow modules start, in this process or in the processes they launch, share its imports
    instead of importing torch again (about 5 CPU s each). Its stderr goes to `log`."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.server: subprocess.Popen | None = None
        self.socket_path = ""

    def running(self) -> str:
        """The socket of a running server: started on first use, and again if it ended."""
        if self.server is not None and self.server.poll() is not None:
            # A request without a server trains in a fresh interpreter, so the tests meanwhile
            # passed on, slower: say so rather than fail them.
            warnings.warn(
                f"the warm trainer server ended in mid-session with code {self.server.returncode}"
                f"; its log {self.log}:\n{self.log.read_text()}",
                stacklevel=1,
            )
            self.server = None
        if self.server is None:
            self.server, self.socket_path = warm_trainer.start_server(os.getpid(), self.log)
        return self.socket_path

    def stop(self) -> None:
        if self.server is not None:
            warm_trainer.stop_server(self.server)


@pytest.fixture(scope="session")
def worker_warm_trainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerWarmTrainer]:
    server = WorkerWarmTrainer(tmp_path_factory.getbasetemp() / "warm-trainer.log")
    yield server
    server.stop()


@pytest.fixture(scope="module", autouse=True)
def warm_trainings_in_slow_modules(request: pytest.FixtureRequest) -> Iterator[None]:
    """The slow modules train: they get the worker's warm trainer server, advertised in the
    environment before their own module-wide fixtures, which train too."""
    if _module_name(request.module) not in SLOW_MODULES:
        yield
        return
    socket_path = request.getfixturevalue("worker_warm_trainer").running()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(warm_trainer.WARM_TRAINER_ENV_VAR, socket_path)
        yield


@pytest.fixture(autouse=True)
def mlflow_store_of_the_test(monkeypatch, tmp_path) -> None:
    """Tracking stays inside the test: a developer's MLFLOW_TRACKING_URI is ignored, and a run
    with an S3 storage root tracks into a temporary folder, not `<repo>/var/crpbot/mlflow/`."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("crpbot_assets.tracking.LOCAL_DEFAULT_ROOT", tmp_path / "local_root")


@pytest.fixture(scope="session")
def empty_dagster_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty instance's storage, its SQLite tables created once per worker: a test copies it
    (0.05 CPU s) instead of creating the tables again (0.21-0.23 CPU s; bench/dagster_instances.py
    compares the two)."""
    home = tmp_path_factory.mktemp("empty_dagster_home")
    with dg.instance_for_test(temp_dir=str(home)):
        pass
    return home


@pytest.fixture
def dagster_instance(tmp_path, empty_dagster_home) -> Iterator[dg.DagsterInstance]:
    """An empty Dagster instance whose DAGSTER_HOME is this test's temporary folder."""
    home = tmp_path / "dagster_home"
    shutil.copytree(empty_dagster_home, home)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server (S3, SageMaker, IAM, STS, logs) on 127.0.0.1 for the whole session.

    The IP address, not `localhost`, keeps S3 on path-style addressing. Tests use `moto_server`,
    which resets the server's state after each test.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_server(moto_endpoint: str, monkeypatch) -> Iterator[str]:
    """moto's server with a clean state; returns its endpoint URL.

    Dummy credentials and the endpoint are set in the environment for this test only, so boto3
    clients anywhere reach it.
    """
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
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
        yield moto_endpoint
    finally:
        # Every bucket, job and role the test made goes, so the next test starts empty.
        reset = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(reset, timeout=10).close()


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
    """Records what is POSTed to it and answers as told.

    `status` is the HTTP status it answers (500 plays "down"); `delay_s` makes it slow: it takes
    the message, then answers that late; `redirect_to` answers every POST with a 301 to that
    Location. `messages` are the bodies it accepted (status 200), `posts` every POST's
    (headers, body), `gets` the GET requests it saw (a POST re-sent as a GET after a redirect).
    """

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.posts: list[tuple[dict[str, str], dict]] = []
        self.gets = 0
        self.status = 200
        self.delay_s = 0.0
        self.redirect_to: str | None = None
        self.url = ""


@contextmanager
def serve_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output quiet
        return

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Send the answer; a client that gave up waiting (a timeout) is not the server's error."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@contextmanager
def serve_webhook() -> Iterator[WebhookReceiver]:
    """An HTTP server on 127.0.0.1 in a thread, recording what is POSTed to it."""
    receiver = WebhookReceiver()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            message = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            receiver.posts.append((dict(self.headers), message))
            if receiver.redirect_to is not None:
                self.answer(301, b"moved", {"Location": receiver.redirect_to})
                return
            if receiver.status == 200:
                receiver.messages.append(message)
            time.sleep(receiver.delay_s)
            self.answer(receiver.status, b"ok")

        def do_GET(self) -> None:
            receiver.gets += 1
            self.answer(200, b"ok")

    with serve_http(Handler) as base_url:
        receiver.url = f"{base_url}/hook"
        yield receiver


@pytest.fixture
def html_endpoint() -> Iterator[str]:
    """An endpoint that answers every request with an HTML page and 200, as a corporate proxy's
    login page or an S3-compatible store's error page does: not AWS's XML or JSON."""
    page = b"<!doctype html><html><title>Sign in</title><h1>Proxy login</h1></html>"

    class Handler(QuietHandler):
        def do_any(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.answer(200, page, {"Content-Type": "text/html"})

        do_GET = do_POST = do_PUT = do_HEAD = do_any

    with serve_http(Handler) as base_url:
        yield base_url


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with serve_webhook() as receiver:
        yield receiver
