"""A process that dies with another one that is not its parent (`die_with_process`): how a
symbol's process, forked by the main command's fork server, dies with the main command."""

from __future__ import annotations

import signal
import subprocess
import sys

TIMEOUT = 60  # seconds; each wait below is bounded


def _python(code: str, **options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], text=True, **options)


def test_a_process_dies_with_the_process_it_watches_whoever_started_it():
    watched = _python("import time; time.sleep(600)")
    watcher = _python(
        "from v8_model.job.lifetime import die_with_process\n"
        f"die_with_process({watched.pid})\n"
        "print('watching', flush=True)\n"
        "import time; time.sleep(600)",
        stdout=subprocess.PIPE,
    )
    try:
        assert watcher.stdout.readline() == "watching\n"
        assert watcher.poll() is None  # alive while the watched process is
        watched.kill()
        watched.wait(timeout=TIMEOUT)
        assert watcher.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        for process in (watched, watcher):
            process.kill()
            process.wait(timeout=TIMEOUT)
        watcher.stdout.close()


def test_a_process_whose_watched_process_is_gone_does_not_start():
    gone = _python("pass")
    gone.wait(timeout=TIMEOUT)
    watcher = _python(
        f"from v8_model.job.lifetime import die_with_process; die_with_process({gone.pid})",
        stderr=subprocess.PIPE,
    )
    _, error = watcher.communicate(timeout=TIMEOUT)
    assert watcher.returncode == 1
    assert f"process {gone.pid} is gone; not running" in error
