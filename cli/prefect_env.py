"""Which Prefect a command talks to, decided before Prefect is imported (it reads its settings once,
at import).

* The server ``candleflow up`` runs for this state directory, when it is up (found through
  ``<home>/run/up.json`` and a health check, not a hand-set variable): no server to start, so a
  flow command costs its own work plus about a second.
* Otherwise Prefect's ephemeral server, with its database in ``<home>/prefect``: each state
  directory keeps its own run history (the one ``candleflow up`` later shows), never mixed with
  another's in ``~/.prefect``.

The user's own ``PREFECT_HOME`` / ``PREFECT_API_URL`` always win."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from core.processes import alive, read_up_state

HEALTH_TIMEOUT_SECONDS = 1.0


def use_prefect_of(home: Path) -> str | None:
    """Point this process's Prefect at ``home``; the API URL of the ``up`` server it attached to,
    else None (ephemeral, or the user's own ``PREFECT_API_URL``). No effect once Prefect is
    imported (an embedding program or a test has chosen already)."""
    if "prefect" in sys.modules:
        return None
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    if os.environ.get("PREFECT_API_URL"):
        return None
    url = up_server_url(home)
    if url is not None:
        os.environ["PREFECT_API_URL"] = f"{url}/api"
    return url


def up_server_url(home: Path) -> str | None:
    """The URL of the Prefect server ``candleflow up`` runs for ``home``, if it is alive and
    healthy; None otherwise (never up, stopped, killed, or still starting)."""
    state = read_up_state(home)
    if state is None or not alive(int(state.get("pid") or 0)):
        return None
    for child in state.get("children") or []:
        if child.get("name") == "prefect server" and child.get("url"):
            url = str(child["url"]).rstrip("/")
            return url if _healthy(f"{url}/api/health") else None
    return None


def _healthy(url: str) -> bool:
    # trust_env off: a proxy from the environment must not see a loopback health check
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=HEALTH_TIMEOUT_SECONDS) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
