"""``candleflow up`` / ``down``: a local Prefect server and the MLflow UI on 127.0.0.1, and
``candleflow serve`` against them, as child processes of one supervisor.

Each child runs in its own process group, so stopping it also stops what it started (uvicorn and
gunicorn workers, the flow runs of ``serve``). The children are written to ``<home>/run/up.json``
so that ``down`` can stop whatever an interrupted ``up`` left running. Stopping goes in reverse
order of starting: serve first (no run starts on a server that is going away), then the UIs."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from subprocess import Popen
from typing import IO

import httpx

from core.errors import CandleflowError
from core.processes import UP_STATE_FILE as STATE_FILE
from core.processes import alive
from core.processes import read_up_state as read_state

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 20.0


class ServerError(CandleflowError):
    """A local server did not start, or stopped on its own."""


@dataclass(frozen=True)
class Child:
    name: str
    pid: int
    url: str = ""
    log: str = ""
    stop_signal: int = signal.SIGTERM


@dataclass(frozen=True)
class Spec:
    """How to start one child and how to know it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health: str = ""  # a URL answering 200 once ready ("" : ready when started)
    url: str = ""  # what the user opens
    log: Path | None = None  # None: the supervisor's own stdout/stderr
    stop_signal: int = signal.SIGTERM


def bin_path(name: str) -> str:
    """A console script of this environment (``prefect``, ``mlflow``, ``candleflow``)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def group_alive(pgid: int) -> bool:
    """Whether any process of the group runs (zombies, exited but not yet reaped, do not)."""
    pids = _group_pids(pgid)
    if pids is not None:
        return bool(pids)
    try:  # no /proc (macOS): zombies count as alive until reaped
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_pids(pgid: int) -> list[int] | None:
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def stop_group(pgid: int, sig: int = signal.SIGTERM, grace: float = STOP_GRACE_SECONDS) -> None:
    """Signal the process group, then SIGKILL what is left after ``grace`` seconds."""
    if not group_alive(pgid):
        return
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pgid)
        if not group_alive(pgid):
            return
        time.sleep(0.1)
    logger.warning("process group %d did not stop in %.0f s: killed", pgid, grace)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _reap(pgid)


def _reap(pid: int) -> None:
    """Collect a child of ours that has exited (else it lingers as a zombie, 'alive')."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


class Supervisor:
    """Starts the children in order (waiting for each to be healthy), records them, stops them in
    reverse order; ``wait`` returns when one of them ends or on a signal."""

    def __init__(self, home: Path, timeout: float) -> None:
        self.state_file = home / STATE_FILE
        self.timeout = timeout
        self.children: list[tuple[Spec, Popen]] = []
        self._files: list[IO] = []

    def start(self, spec: Spec) -> Child:
        out: IO | None = None
        if spec.log is not None:
            spec.log.parent.mkdir(parents=True, exist_ok=True)
            out = spec.log.open("ab")
            self._files.append(out)
        process = Popen(
            spec.argv,
            env=spec.env,
            stdout=out,
            stderr=out,
            stdin=None,
            start_new_session=True,
        )
        self.children.append((spec, process))
        self._write_state()
        if spec.health:
            self._wait_healthy(spec, process)
        return self._child(spec, process)

    @staticmethod
    def _child(spec: Spec, process: Popen) -> Child:
        return Child(spec.name, process.pid, spec.url, str(spec.log or ""), spec.stop_signal)

    def _wait_healthy(self, spec: Spec, process: Popen) -> None:
        deadline = time.monotonic() + self.timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise ServerError(
                        f"{spec.name} exited with code {process.returncode} while starting;"
                        f" see {spec.log}"
                    )
                try:
                    if client.get(spec.health).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise ServerError(f"{spec.name} not healthy after {self.timeout:.0f} s; see {spec.log}")

    def wait(self) -> tuple[str, int] | None:
        """Block until a child exits (its name and code) or a signal interrupts (None)."""
        try:
            while True:
                for spec, process in self.children:
                    code = process.poll()
                    if code is not None:
                        return spec.name, code
                time.sleep(0.5)
        except KeyboardInterrupt:
            return None

    def stop(self) -> None:
        """Stop every child, newest first, and forget the state file."""
        for spec, process in reversed(self.children):
            if process.poll() is None:
                logger.info("stopping %s (pid %d)", spec.name, process.pid)
            stop_group(process.pid, spec.stop_signal)
            process.wait(timeout=5)
        for f in self._files:
            f.close()
        self.children.clear()
        self.state_file.unlink(missing_ok=True)

    def _write_state(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        children = [asdict(self._child(s, p)) for s, p in self.children]
        self.state_file.write_text(json.dumps({"pid": os.getpid(), "children": children}))


def down(home: Path) -> list[Child]:
    """Stop what ``up`` recorded (the supervisor first, then its children, newest first)."""
    state = read_state(home)
    if state is None:
        return []
    stopped = []
    supervisor = int(state.get("pid") or 0)
    if supervisor and supervisor != os.getpid() and alive(supervisor):
        os.kill(supervisor, signal.SIGTERM)  # it stops its children itself …
        deadline = time.monotonic() + STOP_GRACE_SECONDS * 2
        while alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.2)
    for raw in reversed(state.get("children") or []):  # … or they are stopped here
        child = Child(**raw)
        if group_alive(child.pid):
            stop_group(child.pid, child.stop_signal)
            stopped.append(child)
    (home / STATE_FILE).unlink(missing_ok=True)
    return stopped
