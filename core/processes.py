"""Whether a process is alive, by pid (the supervisor's servers, a training's recorded process), and
the state file where ``candleflow up`` lists the servers it runs for a state directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

# ``{"pid": supervisor, "children": [{"name", "pid", "url", "log", "stop_signal"}, …]}``
UP_STATE_FILE = Path("run") / "up.json"


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) is gone."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:  # no /proc (macOS)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def read_up_state(home: Path) -> dict | None:
    """What ``candleflow up`` wrote for ``home`` (None: nothing, or unreadable)."""
    try:
        state = json.loads((home / UP_STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None
