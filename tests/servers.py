"""Real servers for the integration tests: PostgreSQL, dagster-webserver and dagster-daemon.

Each binds 127.0.0.1 on a free port, runs in its own process group (so stopping it also stops
the code servers and run processes it started), waits for readiness with a deadline, and shows
the tail of its log when it dies or never gets ready. A dependency that is missing skips the test
on a developer's machine and fails it under CI=true, where .ci/run has installed it.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import yaml

from crpbot_assets.tracking import SERVER_WITHOUT_JOBS

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_DAGSTER_YAML = REPO_ROOT / "deploy" / "dagster.yaml"
WORKSPACE_YAML = REPO_ROOT / "workspace.yaml"
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
# The interpreter running pytest: its bin/ holds dagster-webserver and dagster-daemon.
VENV_BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"

# Loading the code location imports torch; on a busy 2-core machine that takes a while.
SERVER_START_TIMEOUT = 180.0
STOP_TIMEOUT = 20.0
LOG_TAIL_CHARS = 4000

T = TypeVar("T")


def require(available: bool, reason: str) -> None:
    """Skip the test when a dependency is absent, except under CI=true: there it must be there."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason}; CI=true, where .ci/run installs it", pytrace=False)
    pytest.skip(reason, allow_module_level=True)  # also from a test module's top level


def require_module(name: str) -> ModuleType:
    """Imports `name`, under `require`'s rule for a Python package that is not installed."""
    package = name.partition(".")[0]
    require(
        importlib.util.find_spec(package) is not None, f"Python package {package} not installed"
    )
    return importlib.import_module(name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.exists() else ""


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    interval: float = 0.5,
    alive: Callable[[], None] = lambda: None,
) -> T:
    """Polls `probe` until it returns something other than None; `alive` raises if a server died."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


@dataclass
class Service:
    """A server process in its own process group, with its output in `log`."""

    name: str
    process: subprocess.Popen
    log: Path

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with {code}:\n{log_tail(self.log)}")

    def stop(self) -> None:
        """SIGTERM to the group (graceful shutdown), SIGKILL to whatever outstays STOP_TIMEOUT."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return  # the whole group is gone
            if self._wait_group_gone(STOP_TIMEOUT):
                return

    def _wait_group_gone(self, timeout: float) -> bool:
        """Reaps the leader, then waits for what it started (code servers, runs) to exit too."""
        deadline = time.monotonic() + timeout
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
        return False


def start_service(name: str, args: list[str], env: Mapping[str, str], log: Path) -> Service:
    with log.open("ab") as out:
        process = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole
        )
    return Service(name, process, log)


# --- PostgreSQL ------------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<version>/bin."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]),
    )
    found = candidates[-1] if candidates else shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db_name: str

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads its `storage` section from."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.db_name,
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
        }

    def connect(self):
        import psycopg2

        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=self.db_name,
            connect_timeout=10,
        )


@contextmanager
def postgres_server(db_name: str = "crpbot_dagster") -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster on 127.0.0.1 with password auth and one database."""
    bindir = postgres_bindir()
    require(bindir is not None, "PostgreSQL server binaries not found (apt-get install postgresql)")
    assert bindir is not None
    require_module("psycopg2")

    # initdb refuses to run as root; Debian's package brings a `postgres` user for that.
    as_user: list[str] = []
    if os.geteuid() == 0:
        require(shutil.which("runuser") is not None, "runuser not found (util-linux)")
        as_user = ["runuser", "-u", "postgres", "--"]
    # Not under pytest's tmp_path: that lies in a root-only folder the postgres user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="crpbot-pg-"))
    if as_user:
        shutil.chown(base, user="postgres")
    data, pwfile, log = base / "data", base / "pwfile", base / "server.log"
    user, password, port = "dagster", secrets.token_urlsafe(16), free_port()
    pwfile.write_text(password + "\n")
    if as_user:
        shutil.chown(pwfile, user="postgres")

    def run(*args: str, timeout: float) -> None:
        done = subprocess.run(
            [*as_user, *args],
            cwd=base,  # the postgres user may not enter the caller's folder
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed:\n{done.stdout}{done.stderr}\n{log_tail(log)}")

    pg_ctl = str(bindir / "pg_ctl")
    started = False
    try:
        run(
            str(bindir / "initdb"),
            f"--pgdata={data}",
            f"--username={user}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            timeout=120,
        )
        # Durability is not under test: without fsync the event log writes cost no disk flushes.
        options = f"-k {base} -h 127.0.0.1 -p {port} -c fsync=off -c synchronous_commit=off"
        start = [f"--pgdata={data}", f"--log={log}", "--wait", "--timeout=60"]
        run(pg_ctl, "start", *start, f"--options={options}", timeout=90)
        started = True
        server = Postgres("127.0.0.1", port, user, password, db_name)
        with closing(replace(server, db_name="postgres").connect()) as admin:
            admin.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with admin.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{db_name}"')
        yield server
    finally:
        if started:
            run(
                pg_ctl,
                "stop",
                f"--pgdata={data}",
                "--mode=fast",
                "--wait",
                "--timeout=60",
                timeout=90,
            )
        shutil.rmtree(base, ignore_errors=True)


# --- Dagster -------------------------------------------------------------------------------


def production_dagster_yaml(home: Path) -> Path:
    """deploy/dagster.yaml, unchanged, as `home`'s instance config (env supplies the values)."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    shutil.copyfile(DEPLOY_DAGSTER_YAML, target)
    return target


def load_deploy_config() -> dict[str, Any]:
    return yaml.safe_load(DEPLOY_DAGSTER_YAML.read_text())


def graphql(url: str, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """POST to the webserver's /graphql, as the UI does; returns `data`, raises on `errors`."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": dict(variables or {})}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


LOCATIONS_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
        }
      }
    }
  }
}
"""


def _location_loaded(url: str) -> str | None:
    """The code location's name once the webserver has loaded it; raises on a load error."""
    try:
        data = graphql(url, LOCATIONS_QUERY)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None  # not listening yet
    entries = data["workspaceOrError"].get("locationEntries") or []
    for entry in entries:
        loaded = entry["locationOrLoadError"]
        if loaded and loaded["__typename"] == "PythonError":
            raise RuntimeError(f"code location {entry['name']} failed to load: {loaded['message']}")
        if entry["loadStatus"] == "LOADED" and loaded:
            return entry["name"]
    return None


@dataclass
class Webserver:
    service: Service
    url: str
    location: str


def dagster_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        # Runs and code servers inherit this: one torch thread each keeps 2 cores responsive.
        "OMP_NUM_THREADS": "1",
        **(extra or {}),
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextmanager
def dagster_webserver(home: Path, env: Mapping[str, str], logs: Path) -> Iterator[Webserver]:
    """`dagster-webserver -w workspace.yaml` on 127.0.0.1, ready once the code location loaded."""
    port = free_port()
    service = start_service(
        "dagster-webserver",
        [
            str(VENV_BIN / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(WORKSPACE_YAML),
        ],
        env,
        logs / "webserver.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        location = wait_for(
            lambda: _location_loaded(url),
            what=f"dagster-webserver at {url} loading the code location",
            timeout=SERVER_START_TIMEOUT,
            alive=service.check_alive,
        )
        yield Webserver(service, url, location)
    finally:
        service.stop()


@contextmanager
def dagster_daemon(env: Mapping[str, str], logs: Path) -> Iterator[Service]:
    """`dagster-daemon run -w workspace.yaml`: queue, backfills, sensors, run monitoring."""
    service = start_service(
        "dagster-daemon",
        [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE_YAML)],
        env,
        logs / "daemon.log",
    )
    try:
        yield service
    finally:
        service.stop()


# --- MLflow --------------------------------------------------------------------------------


def _http_ok(url: str) -> bool | None:
    """True once `url` answers 200; None while nothing listens (or it is still starting)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return True if response.status == 200 else None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@contextmanager
def http_service(
    name: str, args: list[str], url: str, logs: Path, env: Mapping[str, str] | None = None
) -> Iterator[Service]:
    """A server started with `args` (this environment, `env` added), ready once `url` answers
    200; stopped afterwards."""
    logs.mkdir(parents=True, exist_ok=True)
    service = start_service(name, args, {**os.environ, **(env or {})}, logs / f"{name}.log")
    try:
        wait_for(
            lambda: _http_ok(url),
            what=f"{name} at {url}",
            timeout=SERVER_START_TIMEOUT,
            alive=service.check_alive,
        )
        yield service
    finally:
        service.stop()


@dataclass
class MlflowServer:
    service: Service
    url: str


@contextmanager
def mlflow_server(folder: Path, logs: Path) -> Iterator[MlflowServer]:
    """`mlflow server` on 127.0.0.1 over a SQLite store in `folder`, proxying its artifacts."""
    require_module("flask")  # the full `mlflow` (the `mlflow-ui` extra), not only mlflow-skinny
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    args += ["--artifacts-destination", str(folder / "artifacts"), "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with http_service("mlflow-server", args, f"{url}/health", logs, SERVER_WITHOUT_JOBS) as service:
        yield MlflowServer(service, url)


# --- Chromium ------------------------------------------------------------------------------

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1920, "height": 1080}


@contextmanager
def chromium_page() -> Iterator[Page]:
    """A Playwright page in Debian's headless Chromium (no browser download: executable_path)."""
    require(CHROMIUM.exists(), f"{CHROMIUM} not found (apt-get install chromium)")
    sync_api = require_module("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)
            # Dagster's one-time "Join the Dagster community" dialog covers the page: skip it
            # whenever it shows up before an action or an assertion.
            page.add_locator_handler(
                page.get_by_text("Join the Dagster community"),
                lambda: page.get_by_role("button", name="Skip").click(),
            )
            yield page
        finally:
            browser.close()
