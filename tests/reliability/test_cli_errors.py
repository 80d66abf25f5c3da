"""What the user can fix ends as one line and exit 2 with the next step, for every command: a
corrupt database or candle file, a state directory that is a file, a full or read-only disk, a
range that collects nothing. A bug keeps its traceback. A planted secret appears in no output."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.errors import user_error
from cli.main import app
from core.store import CandleStore
from tests.features.test_features import market


def _one_line_exit_2(args: list[str], *expected: str) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    message = result.stderr.strip()
    assert message.startswith("candleflow: ") and "Traceback" not in message, message
    for text in expected:
        assert text in " ".join(message.split()), (text, message)
    return message


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CANDLEFLOW_HOME", str(home))
    return home


def test_a_corrupt_live_database(home: Path) -> None:
    assert CliRunner().invoke(app, ["positions"]).exit_code == 0  # creates the ledger
    (home / "live" / "live.db").write_bytes(b"not a database at all" * 10)
    _one_line_exit_2(["positions"], "file is not a database", str(home / "live" / "live.db"))


def test_a_corrupt_model_registry(home: Path) -> None:
    assert CliRunner().invoke(app, ["models", "list"]).exit_code == 0  # creates the registry
    (home / "mlflow" / "mlflow.db").write_bytes(b"garbage" * 100)
    _one_line_exit_2(["models", "list"], "file is not a database", "move it away")


def test_a_corrupt_candle_file(home: Path) -> None:
    CandleStore(home).upsert("EURUSD", "1h", market("EURUSD"))
    path = CandleStore(home).path("EURUSD", "1h")
    path.write_bytes(b"PAR1 torn")
    _one_line_exit_2(["store", "list"], f"cannot read {path}", "move it away")


def test_home_is_a_file_and_an_empty_range(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    _one_line_exit_2(["--home", str(tmp_path / "file"), "positions"], "not a directory")
    args = [
        "--home",
        str(tmp_path / "h"),
        "collect",
        "--start",
        "2026-02-01",
        "--end",
        "2026-01-01",
    ]
    _one_line_exit_2(args, "--start 2026-02-01 is not before --end 2026-01-01")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/x/live.db"), "no space left"),
        (PermissionError(errno.EACCES, "Permission denied", "/x/live.db"), "permission denied"),
    ],
)
def test_a_full_or_read_only_disk(
    home: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, expected: str
) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("core.store.CandleStore.datasets", failing)
    _one_line_exit_2(["store", "list"], expected, "/x/live.db")


def test_a_bug_keeps_its_traceback() -> None:
    assert user_error(KeyError("oops"), Path("h")) is None
    assert user_error(ValueError("oops"), Path("h")) is None
    wrapped = RuntimeError("while reading")
    wrapped.__cause__ = PermissionError(errno.EACCES, "Permission denied", "/x")
    assert "permission denied: /x" in (user_error(wrapped, Path("h")) or "")


SECRET = "planted-secret-6f1d9c"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_planted_secret_appears_in_no_output(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook URL (it holds a token) reaches the settings every flow now receives: it must
    not reach stdout/stderr, the flow run's parameters in Prefect, artifacts or any file."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    monkeypatch.setenv("CANDLEFLOW_LIVE__WEBHOOK_URL", f"https://hooks.example/{SECRET}")
    monkeypatch.setenv("CANDLEFLOW_UNIVERSE__HISTORY_DAYS", "5")
    outputs = []
    for args in (["collect", "--symbols", "BTCUSD"], ["config", "show"], ["positions", "--json"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    assert not any(SECRET in text for text in outputs)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="")), limit=200
        )
        artifacts = client.read_artifacts(limit=200)
    assert runs and not any(SECRET in str(r.parameters) for r in runs)
    assert not any(SECRET in str(a.data) for a in artifacts)
    for path in home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_json_output_is_always_valid(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import math

    from cli.output import print_json

    print_json({"sharpe": math.nan, "profit_factor": [1.5, math.inf], "n": 3})
    assert json.loads(capsys.readouterr().out) == {
        "sharpe": None,
        "profit_factor": [1.5, None],
        "n": 3,
    }
