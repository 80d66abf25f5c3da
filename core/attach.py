"""Whether a command may hand its flow run to the signal service ``candleflow up`` runs for the same
state directory: a warm process (Prefect, MLflow, the models and the libraries loaded once), so a
``signals`` or ``collect`` costs its own work, not ~6 s of imports.

The service takes a run only from someone who can read the state directory (a token it writes
there, ``<home>/run/api-token``, mode 0600) and only for the same **identity**: the same resolved
settings (secrets included) and the same code (every source file of the candleflow packages and
the installed libraries as they were when the service started). A changed config, an environment
variable of the command's own or an edited file makes the command run in its own process, as it
would without ``up``; nothing is ever run with other settings or other code than the command's.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.processes import alive, read_up_state

if TYPE_CHECKING:
    from core.config import Settings

RUN_TOKEN_FILE = Path("run") / "api-token"
TOKEN_HEADER = "X-Candleflow-Run-Token"
SERVICE_CHILD = "api"  # the name ``candleflow up`` gives the signal service in ``run/up.json``
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Service:
    """Where the state directory's signal service listens, and the token it takes runs with."""

    url: str
    token: str
    pid: int


def attached_service(home: Path) -> Service | None:
    """The signal service of the ``up`` running for ``home`` (None: no ``up``, no service in it,
    a dead process, or no token written yet). Reachability is the caller's to find out."""
    state = read_up_state(home)
    if state is None or not alive(int(state.get("pid") or 0)):
        return None
    for child in state.get("children") or []:
        if child.get("name") == SERVICE_CHILD and child.get("url") and alive(child.get("pid", 0)):
            token = read_token(home)
            if token is None:
                return None
            return Service(str(child["url"]).rstrip("/"), token, int(child["pid"]))
    return None


def write_token(home: Path) -> str:
    """A new token for ``home``'s service, readable by the state directory's owner only."""
    path = home / RUN_TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.replace(path.with_suffix(".tmp"), path)
    return token


def read_token(home: Path) -> str | None:
    try:
        return (home / RUN_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def identity(settings: Settings) -> str:
    """The settings (secrets included) and the code a run would use, as one digest."""
    dumped = settings.model_dump() | {"home": str(settings.home.resolve())}
    digest = hashlib.sha256()
    digest.update(json.dumps(dumped, default=_revealed, sort_keys=True).encode())
    digest.update(code_stamp().encode())
    return digest.hexdigest()


def code_stamp() -> str:
    """The candleflow packages' source files (path, size, modification time) and the installed
    libraries' directory (a library added, removed or upgraded changes its entries), as a digest:
    a stat per file, a few milliseconds."""
    digest = hashlib.sha256(sys.version.encode())
    for package in sorted(p for p in ROOT.iterdir() if (p / "__init__.py").is_file()):
        for path in sorted(package.rglob("*.py")):
            stat = path.stat()
            digest.update(f"{path.relative_to(ROOT)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    libraries = Path(sysconfig.get_paths()["purelib"])
    try:
        digest.update(f"{libraries}:{libraries.stat().st_mtime_ns}".encode())
    except OSError:
        digest.update(str(libraries).encode())
    return digest.hexdigest()


def _revealed(value: Any) -> Any:
    """JSON for what ``json`` does not encode: a secret's value, a set in order, else ``str``."""
    reveal = getattr(value, "get_secret_value", None)
    if callable(reveal):
        return reveal()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)
