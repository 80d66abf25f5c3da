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
