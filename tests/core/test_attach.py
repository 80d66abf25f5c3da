"""Which service a command may hand its run to: the identity (settings, secrets, code), the token
file, and the service found through ``run/up.json``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from core import attach
from core.attach import attached_service, identity, read_token, write_token
from core.config import load_settings
from core.processes import UP_STATE_FILE


def test_identity_follows_the_settings_and_their_secrets(tmp_path: Path) -> None:
    base = load_settings(home=tmp_path)
    assert identity(base) == identity(load_settings(home=tmp_path))
    assert identity(base) != identity(load_settings(home=tmp_path, universe={"symbols": ["ETH"]}))
    with_secret = load_settings(home=tmp_path, api={"webhook_secret": "secret-one-0123456789"})
    other_secret = load_settings(home=tmp_path, api={"webhook_secret": "secret-two-0123456789"})
    assert identity(with_secret) != identity(other_secret)  # a masked dump would say equal


def test_identity_resolves_the_state_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert identity(load_settings(home="state")) == identity(load_settings(home=tmp_path / "state"))
    assert identity(load_settings(home="state")) != identity(load_settings(home="other"))


def test_identity_follows_the_code(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("x = 1\n")
    (tmp_path / "notes").mkdir()  # not a package: not stamped
    monkeypatch.setattr(attach, "ROOT", tmp_path)
    settings = load_settings(home=tmp_path / "home")
    before = identity(settings)
    (tmp_path / "notes" / "a.py").write_text("y = 2\n")
    assert identity(settings) == before
    (package / "mod.py").write_text("x = 22\n")  # an edit: another size
    assert identity(settings) != before


def test_the_stamp_is_the_same_in_another_process() -> None:
    here = attach.code_stamp()
    code = "from core.attach import code_stamp; print(code_stamp())"
    root = Path(__file__).resolve().parents[2]
    there = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert there.stdout.strip() == here


def test_the_token_is_the_owners_alone(tmp_path: Path) -> None:
    assert read_token(tmp_path) is None
    token = write_token(tmp_path)
    assert len(token) >= 40 and read_token(tmp_path) == token
    mode = stat.S_IMODE((tmp_path / attach.RUN_TOKEN_FILE).stat().st_mode)
    assert mode == 0o600
    assert write_token(tmp_path) != token  # a new service, a new token


def _up(home: Path, supervisor: int, api: int, name: str = "api") -> None:
    (home / UP_STATE_FILE).parent.mkdir(parents=True, exist_ok=True)
    child = {"name": name, "pid": api, "url": "http://127.0.0.1:8765/"}
    (home / UP_STATE_FILE).write_text(json.dumps({"pid": supervisor, "children": [child]}))


def test_the_service_is_found_through_up_state(tmp_path: Path) -> None:
    assert attached_service(tmp_path) is None  # never up
    _up(tmp_path, os.getpid(), os.getpid())
    assert attached_service(tmp_path) is None  # up, but no token yet
    token = write_token(tmp_path)
    found = attached_service(tmp_path)
    assert found is not None
    assert (found.url, found.token, found.pid) == ("http://127.0.0.1:8765", token, os.getpid())


@pytest.mark.parametrize("dead", ["supervisor", "api", "no api"])
def test_no_service_when_up_or_its_api_is_gone(tmp_path: Path, dead: str) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_token(tmp_path)
    me = os.getpid()
    if dead == "supervisor":
        _up(tmp_path, gone.pid, me)
    elif dead == "api":
        _up(tmp_path, me, gone.pid)
    else:
        _up(tmp_path, me, me, name="prefect server")
    assert attached_service(tmp_path) is None
