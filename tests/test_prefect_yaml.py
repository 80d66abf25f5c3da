"""prefect.yaml is loaded, not trusted: every entrypoint imports to a flow whose signature takes
the deployment's parameters, and every schedule is well formed."""

import importlib
import inspect
from pathlib import Path

import pytest
import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["name"])
def test_entrypoint_imports_and_parameters_match(deployment: dict) -> None:
    path, _, name = deployment["entrypoint"].partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    assert isinstance(flow, Flow)
    signature = inspect.signature(flow.fn)
    assert set(deployment.get("parameters") or {}) <= set(signature.parameters)
    for schedule in deployment.get("schedules") or []:
        assert ("interval" in schedule) ^ ("cron" in schedule) ^ ("rrule" in schedule)
        if "interval" in schedule:
            assert schedule["interval"] > 0
        if "cron" in schedule:  # parsed the way the Prefect server parses it
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))


def test_served_deployments_are_the_yaml_ones() -> None:
    """`candleflow serve` builds its deployments from prefect.yaml: same names, entrypoints,
    parameters and schedules; the CPU-bound fan-outs take their task runner from the config."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from deployments.local import flow_of, runner_deployments
    from flows._runner import ConfiguredTaskRunner

    served = {d.name: d for d in runner_deployments()}
    assert list(served) == [d["name"] for d in DEPLOYMENTS]
    for d in DEPLOYMENTS:
        s = served[d["name"]]
        assert s.entrypoint == d["entrypoint"] and s.parameters == (d.get("parameters") or {})
        crons = [x.schedule.cron for x in s.schedules if hasattr(x.schedule, "cron")]
        assert crons == [x["cron"] for x in d.get("schedules") or [] if "cron" in x]
    interval = served["collect"].schedules[0].schedule
    assert interval.interval.total_seconds() == 900 and interval.anchor_date.minute == 5
    runners = {d["name"]: flow_of(d["entrypoint"]).task_runner for d in DEPLOYMENTS}
    assert isinstance(runners["dataset"], ConfiguredTaskRunner)
    assert isinstance(runners["train"], ConfiguredTaskRunner)
    assert isinstance(runners["live-1h"], ThreadPoolTaskRunner)


def test_serve_without_a_server_points_to_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # also under the test harness
        result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "candleflow up" in result.stderr
