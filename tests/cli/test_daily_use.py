"""Daily use: a fast command line that loads nothing it does not need, finds the ``up`` server of
its state directory, keeps Prefect's history per state directory, stays quiet, and says what to do
next on an expected error."""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import logs, output
from cli.main import app
from cli.prefect_env import up_server_url
from core.processes import UP_STATE_FILE

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CANDLEFLOW_"))}
    return env | {"CANDLEFLOW_HOME": str(home)}


# -- loading nothing it does not need ------------------------------------------------------------
def test_help_loads_no_prefect_mlflow_or_data_library(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom cli.main import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('prefect', 'mlflow', 'polars', 'numpy', 'pandas', 'sqlalchemy', 'sklearn')\n"
        "print('loaded:', ','.join(m for m in heavy if m in sys.modules))"
    )
    output = _python(code, _clean_env(tmp_path / "home"))
    assert output.strip().splitlines()[-1] == "loaded:"  # none of them


def test_loading_the_configuration_does_not_import_talib(tmp_path: Path) -> None:
    """Every command loads (and validates) the configuration: TA-Lib's facts come from the
    catalog of the installed version, so TA-Lib (and the pandas it imports) stays unloaded."""
    code = (
        "import sys\nfrom core.config import load_settings\nload_settings()\n"
        "print('loaded:', ','.join(m for m in ('talib', 'pandas') if m in sys.modules))"
    )
    output = _python(code, _clean_env(tmp_path / "home"))
    assert output.strip().splitlines()[-1] == "loaded:"


def test_a_flows_libraries_load_without_collections_and_stay_frozen(tmp_path: Path) -> None:
    """The cyclic collector is paused while a flow's libraries load and they are frozen after:
    it never traverses them (a signals run spent seconds there); its own state is restored."""
    code = (
        "import gc\nfrom cli.common import loading_libraries\n"
        "runs = []\ngc.callbacks.append(lambda phase, info: runs.append(phase))\n"
        "with loading_libraries():\n    import polars, sqlalchemy.orm\n"
        "print(len(runs), gc.get_freeze_count() > 10_000, gc.isenabled())\n"
        "gc.disable()\nwith loading_libraries():\n    pass\nprint(gc.isenabled())"
    )
    output = _python(code, _clean_env(tmp_path / "home"))
    assert output.strip().splitlines()[-2:] == ["0 True True", "False"]


def test_a_command_leaves_its_objects_frozen_for_the_exit(tmp_path: Path) -> None:
    """The interpreter's last full collection would traverse everything a command loaded."""
    code = (
        "import atexit, gc, sys\nsys.argv = ['candleflow', '--version']\n"
        "atexit.register(lambda: print('frozen:', gc.get_freeze_count() > 0))\n"
        "from cli.main import main\nmain()"
    )
    output = _python(code, _clean_env(tmp_path / "home"))
    assert output.strip().splitlines()[-1] == "frozen: True"


def test_version() -> None:
    result = _invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("candleflow ")


def test_commands_listed_in_pipeline_order() -> None:
    text = _invoke("--help").stdout
    positions = [text.index(f" {name} ") for name in ("run", "collect", "dataset", "train")]
    assert positions == sorted(positions)
    assert "Pipeline" in text and "--install-completion" in text


def test_quiet_and_verbose_together_is_a_user_error() -> None:
    result = _invoke("-q", "-v", "status")
    assert result.exit_code == 2 and "choose one" in result.stderr


# -- which Prefect: per state directory, or the `up` server --------------------------------------
def test_prefect_history_lives_in_the_state_directory(tmp_path: Path) -> None:
    code = (
        "import os\nfrom pathlib import Path\nfrom cli.prefect_env import use_prefect_of\n"
        "print(use_prefect_of(Path(os.environ['CANDLEFLOW_HOME'])))\n"
        "print(os.environ['PREFECT_HOME'])\nprint(os.environ.get('PREFECT_API_URL'))"
    )
    home = tmp_path / "home"
    attached, prefect_home, api = _python(code, _clean_env(home)).split()
    assert (attached, prefect_home, api) == ("None", str(home / "prefect"), "None")
    # the user's own choice wins
    own = _clean_env(home) | {"PREFECT_HOME": str(tmp_path / "mine")}
    assert _python(code, own).split()[1] == str(tmp_path / "mine")


@pytest.fixture
def health_server() -> Iterator[str]:
    """A stand-in for the Prefect server of `up`: 127.0.0.1, answers /api/health."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()
            self.wfile.write(b"true")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _write_up_state(home: Path, pid: int, url: str) -> None:
    path = home / UP_STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    child = {"name": "prefect server", "pid": pid, "url": url, "log": "", "stop_signal": 15}
    path.write_text(json.dumps({"pid": pid, "children": [child]}))


def test_attaches_to_the_up_server_of_its_state_directory(
    tmp_path: Path, health_server: str
) -> None:
    home = tmp_path / "home"
    assert up_server_url(home) is None  # never up
    _write_up_state(home, os.getpid(), health_server)
    assert up_server_url(home) == health_server
    code = (
        "import os\nfrom pathlib import Path\nfrom cli.prefect_env import use_prefect_of\n"
        "use_prefect_of(Path(os.environ['CANDLEFLOW_HOME']))\nprint(os.environ['PREFECT_API_URL'])"
    )
    assert _python(code, _clean_env(home)).strip() == f"{health_server}/api"


def test_a_dead_or_unhealthy_up_is_not_attached(tmp_path: Path, health_server: str) -> None:
    home = tmp_path / "home"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_up_state(home, dead.pid, health_server)
    assert up_server_url(home) is None  # the supervisor is gone
    _write_up_state(home, os.getpid(), "http://127.0.0.1:9")  # alive, but nothing answers
    assert up_server_url(home) is None
    (home / UP_STATE_FILE).write_text("{torn")
    assert up_server_url(home) is None


# -- quiet output --------------------------------------------------------------------------------
def _record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "m", None, None)


def test_console_filter_by_verbosity() -> None:
    normal, quiet, verbose = (
        logs.ConsoleFilter(v) for v in (logs.NORMAL, logs.QUIET, logs.VERBOSE)
    )
    for name in ("mlflow.pyfunc", "py.warnings", "prefect.server", "alembic.runtime"):
        assert not normal.filter(_record(name, logging.WARNING))  # a library's notice: file only
        assert normal.filter(_record(name, logging.ERROR))
        assert verbose.filter(_record(name, logging.INFO))
    assert normal.filter(_record("models.training", logging.WARNING))
    assert not normal.filter(_record("prefect.task_runs", logging.INFO))  # "Finished in state"
    assert normal.filter(_record("prefect.task_runs", logging.WARNING))
    assert not quiet.filter(_record("prefect.task_runs", logging.WARNING))
    assert quiet.filter(_record("flows.pipeline", logging.ERROR))


def test_log_file_gets_what_the_terminal_does_not(tmp_path: Path) -> None:
    capture = logging.StreamHandler(io.StringIO())  # a test's or an embedding program's capture
    logging.getLogger().addHandler(capture)
    path = logs.route_logs(tmp_path / "home", logs.NORMAL)
    try:
        assert not capture.filters  # only what writes to the terminal is filtered
        assert path == tmp_path / "home" / logs.LOG_FILE
        logging.getLogger("models.recording").info("a line for the file")
        for handler in logging.getLogger().handlers:
            if getattr(handler, "baseFilename", "") == str(path):
                handler.flush()
        assert "a line for the file" in path.read_text()
        assert logs.route_logs(tmp_path / "home", logs.NORMAL) == path  # idempotent
        ours = [
            h for h in logging.getLogger().handlers if getattr(h, "baseFilename", "") == str(path)
        ]
        assert len(ours) == 1
    finally:
        logging.getLogger().removeHandler(capture)
        for handler in list(logging.getLogger().handlers):
            handler.filters = [f for f in handler.filters if not isinstance(f, logs.ConsoleFilter)]
            if getattr(handler, "baseFilename", "") == str(path):
                logging.getLogger().removeHandler(handler)
                handler.close()


def test_stage_board_follows_task_runs() -> None:
    board = logs.StageBoard(units=[("BTCUSD", "1h"), ("EURUSD", "1h")])
    assert not board.update("train-BTCUSD-1h", "Beginning task run")
    assert board.update("label-BTCUSD-1h", "Finished in state Completed()")
    assert board.update("train-BTCUSD-1h", "Finished in state Completed()")
    assert board.update("fetch-EURUSD-1h", "Finished in state Failed('boom')")
    assert board.update("open_live_run-abc", "Finished in state Completed()")  # counted only
    assert board.reached == {
        ("BTCUSD", "1h"): ("train", "Completed"),
        ("EURUSD", "1h"): ("fetch", "Failed"),
    }
    assert (board.finished, board.failed) == (4, 1)
    assert board.table("t").row_count == 2


# -- expected errors: one line, exit 2, the next step --------------------------------------------
def test_train_without_a_dataset_says_what_to_run(tmp_path: Path) -> None:
    result = _invoke("train", "--symbols", "BTCUSD,ETHUSD")
    assert result.exit_code == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "candleflow dataset --symbols BTCUSD,ETHUSD" in result.stderr
    assert not (tmp_path / "home" / "mlflow").exists()  # refused before anything started


def test_gaps_of_nothing_stored_is_an_error() -> None:
    result = _invoke("store", "gaps", "FOO", "1h")
    assert result.exit_code == 2 and "store list" in result.stderr


# -- status --------------------------------------------------------------------------------------
def test_status_of_an_empty_state_directory() -> None:
    result = _invoke("status")
    assert result.exit_code == 0, result.stderr
    assert "store: empty" in result.stdout and "not running" in result.stdout


def test_status_json_lists_store_and_prefect_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.store import CandleStore
    from tests.conftest import make_candles

    home = tmp_path / "home"
    start = datetime(2026, 11, 1, tzinfo=UTC)
    CandleStore(home).upsert("BTCUSD", "1h", make_candles(start, 48), now=start + timedelta(days=3))
    monkeypatch.delenv("PREFECT_HOME")  # the default: Prefect's history in the state directory
    database = home / "prefect" / "prefect.db"  # Prefect's tables, as much as status reads
    database.parent.mkdir(parents=True)
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE flow (id TEXT, name TEXT)")
        db.execute(
            "CREATE TABLE flow_run (id TEXT, flow_id TEXT, name TEXT, state_type TEXT, "
            "state_name TEXT, start_time TEXT, end_time TEXT, expected_start_time TEXT)"
        )
        db.execute("INSERT INTO flow VALUES ('f', 'candleflow-pipeline')")
        db.execute(
            "INSERT INTO flow_run VALUES ('r1', 'f', 'brave-fox', 'COMPLETED', 'Completed', "
            "'2026-12-01 10:00:00', '2026-12-01 10:01:00', '2026-12-01 10:00:00')"
        )
        db.execute(
            "INSERT INTO flow_run VALUES ('r2', 'f', 'next-one', 'SCHEDULED', 'Scheduled', "
            "NULL, NULL, '2026-12-01 11:00:00')"
        )
    result = _invoke("status", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert [r["symbol"] for r in document["store"]] == ["BTCUSD"]
    assert [r["run"] for r in document["last_runs"]] == ["brave-fox"]
    assert [r["run"] for r in document["next_runs"]] == ["next-one"]
    assert document["servers"]["up"] is False and document["champions"] == []
    table = _invoke("status").stdout
    assert "brave-fox" in table and "BTCUSD" in table


def test_quiet_keeps_errors_and_results() -> None:
    try:
        result = _invoke("-q", "store", "gaps", "FOO", "1h")
        assert result.exit_code == 2 and "store list" in result.stderr  # the error still prints
        result = _invoke("-q", "status")
        assert result.exit_code == 0 and "store: empty" in result.stdout
    finally:
        logs.set_verbosity(logs.NORMAL)  # back to normal for the tests after this one
        output.stderr.quiet = False


def test_a_commands_flow_run_sends_no_heartbeats_unless_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command's own flow run has Prefect's heartbeat thread off (its join costs ~0.8 s per
    command); a frequency the user set is kept."""
    from prefect.settings import get_current_settings

    from cli.common import run_flow

    class Done:
        def __init__(self, value: object) -> None:
            self.value = value

        def result(self, raise_on_failure: bool = True) -> object:
            return self.value

    def frequency(return_state: bool) -> Done:
        return Done(get_current_settings().flows.heartbeat_frequency)

    for name in ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"):
        monkeypatch.delenv(name, raising=False)
    assert run_flow(frequency) is None
    assert get_current_settings().flows.heartbeat_frequency is not None  # only inside
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    assert run_flow(frequency) == get_current_settings().flows.heartbeat_frequency
