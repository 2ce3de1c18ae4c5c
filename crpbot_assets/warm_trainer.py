"""A warm start for the training entry point: one server imports it once, then forks each training.

A fresh `python -m v8_model.job.train` spends about 4 CPU s importing torch, pandas, scipy, arch
and scikit-learn before it trains, and torch's optimizers import `torch._dynamo` (about 1 more)
on first use; every symbol of the main command and every local training of the test suite paid
that again.
Here a server process imports `WARM_IMPORTS` once and forks a child per training, which runs
the entry point as `python -m` would, in the requester's environment, working folder and
standard streams:

    server:  python -m crpbot_assets.warm_trainer --serve SOCKET --owner PID
    request: python -m crpbot_assets.warm_trainer     (with WARM_TRAINER_ENV_VAR=SOCKET)

The request is what `LocalTrainer` runs under Pipes instead of the entry point when
WARM_TRAINER_ENV_VAR is set: a small process (standard library only) that hands its environment,
working folder and streams (file descriptors, over the Unix socket) to the server, forwards
SIGINT and SIGTERM to the training, and exits with the training's exit code. So Pipes, the
contract's environment and the failure file are the same as with a fresh interpreter; only the
imports are shared.

Lifetimes:
- the server ends when its owner (the main command, a pytest worker) ends, however it ends;
- a training is SIGKILLed when its request process ends, however it ends, and the request
  process when its parent (the trainer's process) ends (`v8_model.job.lifetime`): no training
  outlives the process that asked for it;
- a request whose server is gone (no socket, or nobody listening) says so on stderr and becomes
  the fresh entry point itself (`exec`): a lost server costs speed, never a training.

The server runs one thread and forks only from its loop, after the imports: a child never
inherits a lock held by another thread. Its children are in its own session, like a trainer that
its requester started in the requester's session, away from a SIGTERM to the main command's
process group.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import NoReturn

from crpbot_assets.symbol_processes import THREADS_ENV_VAR, socket_temp_folder
from v8_model.job.contract import ENTRY_POINT_MODULE
from v8_model.job.lifetime import PARENT_PID_ENV_VAR, die_with_parent, die_with_process

WARM_TRAINER_ENV_VAR = "CRPBOT_WARM_TRAINER"
# What the entry point's module imports (it is run afresh per training, as `python -m` would),
# and torch._dynamo, which torch's optimizers import when the first one is built.
ENTRY_POINT_IMPORTS = ("v8_model.job.entrypoint", "v8_model.job.lifetime", "torch._dynamo")
# The libraries a training imports on first use: pyarrow's pandas conversion, and scikit-learn and
# arch, which the scaler, the gates and the worth tests import inside their functions (so the
# Dagster definitions load without them). Each fork imported those 640 modules again: 0.5 CPU s of
# a training's 3.8 (tests/test_warm_trainer.py checks that a training imports no library beyond
# WARM_IMPORTS; bench/warm_trainings.py measures the difference).
FIRST_USE_IMPORTS = (
    "pyarrow.pandas_compat",  # v8_model.job.entrypoint's features to pandas, which imports
    "pyarrow.vendored.version",  # this on first use
    "sklearn.preprocessing",  # v8_model.data.processor
    "sklearn.metrics",  # v8_model.evaluation.gates
    "arch.bootstrap",  # v8_model.evaluation.worth
)
WARM_IMPORTS = (*ENTRY_POINT_IMPORTS, *FIRST_USE_IMPORTS)
# A request (environment, folder, arguments) is one datagram of a SOCK_SEQPACKET socket.
MAX_REQUEST_BYTES = 1 << 20
STREAMS = (0, 1, 2)  # stdin, stdout, stderr
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # how Pipes and a supervisor stop a training
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
SERVER_START_TIMEOUT_S = 120.0
SOCKET_FOLDER_PREFIX = "crpbot-warm-trainer-"
SOCKET_NAME_LENGTH = len(f"/{SOCKET_FOLDER_PREFIX}XXXXXXXX/socket")


# ---- the server -------------------------------------------------------------------------------


def serve(socket_path: str, owner_pid: int) -> None:
    """Listen on `socket_path` until process `owner_pid` ends, forking one training per request.

    Requests that arrive while the imports run wait in the socket's backlog.
    """
    # SIGTERM (`stop_server`) ends it through the `finally` below, which removes the socket.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    owner = os.pidfd_open(owner_pid)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(socket_path)
    try:
        listener.listen(64)
        for module in WARM_IMPORTS:
            importlib.import_module(module)
        gc.freeze()  # the children's collections skip what was imported (gc.freeze's docs)
        _serve_requests(listener, owner)
    finally:
        Path(socket_path).unlink()
        if Path(socket_path).parent.name.startswith(SOCKET_FOLDER_PREFIX):  # start_server's
            Path(socket_path).parent.rmdir()


def _serve_requests(listener: socket.socket, owner: int) -> None:
    """Fork a training per request and report its exit code, until the owner ends."""
    trainings: dict[int, tuple[int, socket.socket]] = {}  # pidfd → (pid, request connection)
    with selectors.DefaultSelector() as selector:
        selector.register(owner, selectors.EVENT_READ)
        selector.register(listener, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fd == owner:
                    print("warm trainer server: its owner ended", file=sys.stderr)
                    return
                if key.fileobj is listener:
                    connection, _ = listener.accept()
                    server_fds = [owner, listener.fileno(), selector.fileno(), *trainings]
                    server_fds += [other.fileno() for _, other in trainings.values()]
                    pid = _fork_training(connection, server_fds)
                    if pid is None:
                        continue
                    pidfd = os.pidfd_open(pid)
                    trainings[pidfd] = (pid, connection)
                    selector.register(pidfd, selectors.EVENT_READ)
                else:
                    pid, connection = trainings.pop(key.fd)
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    _, status = os.waitpid(pid, 0)
                    # A request process that was killed no longer listens; its training is over.
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        connection.send(str(os.waitstatus_to_exitcode(status)).encode())
                    connection.close()


def _fork_training(connection: socket.socket, server_fds: list[int]) -> int | None:
    """Fork the child that trains for the request on `connection`; returns its pid, or None
    when the request process ended before it asked (killed while it started): nothing to train,
    and the server goes on serving the others."""
    try:
        message, fds, _, _ = socket.recv_fds(connection, MAX_REQUEST_BYTES, len(STREAMS))
    except ConnectionResetError:
        message, fds = b"", []
    if not message or len(fds) != len(STREAMS):
        for fd in fds:
            os.close(fd)
        connection.close()
        print("warm trainer server: a request process ended before its request", file=sys.stderr)
        return None
    requester_pid, _, _ = _PEERCRED.unpack(
        connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    request = json.loads(message)
    # A SIGINT or SIGTERM that the request process forwards as soon as it has the pid waits
    # until the child has its own handlers: raised in the child before that, it would unwind
    # through the server's frames, whose `finally` removes the socket the server still serves.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    pid = os.fork()
    if pid == 0:
        try:
            for fd in server_fds:
                os.close(fd)
            connection.close()
            _train(request, fds, requester_pid)
        finally:
            os._exit(1)  # whatever happened, never back into the server's code
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    for fd in fds:
        os.close(fd)
    # A request process killed meanwhile no longer listens; its training dies with it.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        connection.send(str(pid).encode())
    return pid


def _train(request: dict, streams: list[int], requester_pid: int) -> None:
    """In the forked child: become `python -m ENTRY_POINT_MODULE` as the requester would have run
    it, then exit with its code."""
    code = 1
    try:
        for stream, fd in zip(STREAMS, streams, strict=True):
            os.dup2(fd, stream)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked across the fork
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _share_of_the_cores(os.environ.get(THREADS_ENV_VAR))
        die_with_process(requester_pid)
        sys.argv = [ENTRY_POINT_MODULE, *request["argv"]]
        code = _run_module(ENTRY_POINT_MODULE)
    except SystemExit as exit_:  # e.g. its request process is gone already
        print(exit_.code, file=sys.stderr)
    except BaseException:  # before the entry point ran: say why the training did not start
        traceback.print_exc()
    finally:
        # The exit handlers a fresh interpreter runs (the child skips the server's `finally`s).
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed stream has nothing to flush
                stream.flush()
        atexit._run_exitfuncs()
        os._exit(code)


def _share_of_the_cores(threads: str | None) -> None:
    """torch and the BLAS libraries read OMP_NUM_THREADS once, as they load in the server."""
    if not threads:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(int(threads))
    threadpool_limits(int(threads))


def _run_module(module: str) -> int:
    """`python -m module`'s exit code: SystemExit's, or 1 with the traceback printed."""
    sys.modules.pop(module, None)  # run afresh as __main__, as `python -m` does
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    except BaseException:  # what the interpreter itself would print on the way out
        traceback.print_exc()
        return 1
    return 0


_own_server: tuple[subprocess.Popen, str] | None = None


def ensure_server() -> str:
    """The socket of the warm trainer server that this process's trainings use; starts one owned
    by this process, and advertises it to them in WARM_TRAINER_ENV_VAR, unless one is advertised
    already (e.g. by a parent main command)."""
    global _own_server
    advertised = os.environ.get(WARM_TRAINER_ENV_VAR)
    if advertised:
        return advertised
    _own_server = start_server(os.getpid())
    os.environ[WARM_TRAINER_ENV_VAR] = _own_server[1]
    return _own_server[1]


def stop_own_server() -> None:
    """Stop the server `ensure_server` started, if it started one."""
    global _own_server
    if _own_server is not None:
        stop_server(_own_server[0])
        os.environ.pop(WARM_TRAINER_ENV_VAR, None)
        _own_server = None


def start_server(owner_pid: int, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start a server owned by `owner_pid` in a session of its own; returns it and its socket.

    Its stderr (an error that ended it, its owner's end, a request it dropped) goes to `log`
    when given, else to this process's stderr.
    """
    folder = tempfile.mkdtemp(
        prefix=SOCKET_FOLDER_PREFIX, dir=socket_temp_folder(SOCKET_NAME_LENGTH)
    )
    socket_path = str(Path(folder) / "socket")
    with open(log, "a") if log else contextlib.nullcontext() as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, "--serve", socket_path, "--owner", str(owner_pid)],
            start_new_session=True,
            stderr=stderr,
        )
    # Bounded wait for the socket (the server binds it before its imports).
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not os.path.exists(socket_path):
        if process.poll() is not None:
            raise RuntimeError(f"the warm trainer server exited with code {process.returncode}")
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"the warm trainer server did not create {socket_path}")
        time.sleep(0.01)
    return process, socket_path


def stop_server(process: subprocess.Popen) -> None:
    """End the server (it removes its socket) and wait for it."""
    process.terminate()
    process.wait()


# ---- the request ------------------------------------------------------------------------------


def _train_fresh(reason: str, argv: list[str]) -> NoReturn:
    """Become `python -m ENTRY_POINT_MODULE` itself: a server that is gone costs speed, never a
    training. This process's environment still names its parent (PARENT_PID_ENV_VAR), whose
    child the entry point then is."""
    print(f"{__name__}: {reason}; training in a fresh interpreter", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", ENTRY_POINT_MODULE, *argv])


def request_training(socket_path: str, argv: list[str]) -> int:
    """Ask the server at `socket_path` to train with this process's environment, folder and
    streams; wait for the training and return its exit code (negative: killed by that signal)."""
    env = {key: value for key, value in os.environ.items() if key != PARENT_PID_ENV_VAR}
    request = {"cwd": os.getcwd(), "env": env, "argv": argv}
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        connection.connect(socket_path)
    except (FileNotFoundError, ConnectionRefusedError) as error:
        connection.close()
        no_server = f"no warm trainer server at {socket_path} ({WARM_TRAINER_ENV_VAR}): {error}"
        _train_fresh(no_server, argv)
    # SIGINT or SIGTERM (Pipes' stop) before the training's pid is known waits, then is forwarded.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    with connection:
        socket.send_fds(connection, [json.dumps(request, allow_nan=False).encode()], list(STREAMS))
        reply = connection.recv(64)
        if not reply:
            raise SystemExit(f"the warm trainer server at {socket_path} refused the training")
        training_pid = int(reply)

        def forward(signal_number: int, _frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):  # it has just ended: nothing to stop
                os.kill(training_pid, signal_number)

        for signal_number in STOP_SIGNALS:
            signal.signal(signal_number, forward)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        reply = connection.recv(64)
    if not reply:
        raise SystemExit(
            f"the warm trainer server at {socket_path} ended before training {training_pid} did"
        )
    return int(reply)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__)
    parser.add_argument("--serve", metavar="SOCKET", help="run the server on this socket")
    parser.add_argument("--owner", type=int, help="the server ends when this process does")
    args, entry_arguments = parser.parse_known_args(argv)
    if args.serve:
        if args.owner is None:
            parser.error("--serve needs --owner")
        serve(args.serve, args.owner)
        return 0
    socket_path = os.environ.get(WARM_TRAINER_ENV_VAR)
    if not socket_path:
        parser.error(f"{WARM_TRAINER_ENV_VAR} is not set: no server to ask")
    # Killed with its parent, as the entry point would have been. This process imports only the
    # standard library and the lifetime module, so it starts in milliseconds.
    die_with_parent(os.environ)
    code = request_training(socket_path, entry_arguments)
    if code < 0:  # end the way the training ended, as its parent would have seen it
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main())
