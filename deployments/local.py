"""The deployments of ``prefect.yaml``, built for ``candleflow serve``: one process serves them all
(each flow run in a subprocess), with the same names, parameters, tags and schedules as
``prefect deploy --all`` would create for a work pool. prefect.yaml stays the one definition."""

from __future__ import annotations

import importlib
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule

from core.errors import ConfigError

PREFECT_YAML = "prefect.yaml"


def prefect_yaml() -> Path:
    """prefect.yaml at the repository root, or inside the installed package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / PREFECT_YAML, here / PREFECT_YAML):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{PREFECT_YAML} is missing from the installation ({here})")


def definitions(path: Path | None = None) -> list[dict[str, Any]]:
    """The ``deployments:`` of prefect.yaml (anchors resolved)."""
    path = path or prefect_yaml()
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the deployments: {exc}") from None
    deployments = (document or {}).get("deployments") or []
    if not deployments:
        raise ConfigError(f"{path}: no deployments defined")
    return deployments


def flow_of(entrypoint: str) -> Flow:
    """The flow an entrypoint (``flows/x.py:fn``) names."""
    path, _, name = entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name, None)
    if not isinstance(flow, Flow):
        raise ConfigError(f"entrypoint {entrypoint}: {name} is not a Prefect flow")
    return flow


def schedules_of(definition: dict[str, Any]) -> list[Schedule]:
    out = []
    for s in definition.get("schedules") or []:
        tz = s.get("timezone")
        if "cron" in s:
            out.append(Cron(s["cron"], timezone=tz, active=s.get("active", True)))
        elif "interval" in s:
            anchor = s.get("anchor_date")
            out.append(
                Interval(
                    s["interval"],
                    anchor_date=datetime.fromisoformat(anchor) if anchor else None,
                    timezone=tz,
                    active=s.get("active", True),
                )
            )
        else:
            raise ConfigError(f"deployment {definition['name']}: unsupported schedule {s}")
    return out


def runner_deployments(path: Path | None = None) -> list[RunnerDeployment]:
    """Every deployment of prefect.yaml, ready for ``prefect.serve``. Served runs re-import their
    entrypoint in a subprocess, so the fan-out flows' :class:`ConfiguredTaskRunner` reads the
    config then (``candleflow serve`` exports ``CANDLEFLOW_CONFIG`` / ``CANDLEFLOW_HOME``)."""
    out = []
    for d in definitions(path):
        flow = flow_of(d["entrypoint"])
        out.append(
            flow.to_deployment(
                name=d["name"],
                description=d.get("description"),
                tags=d.get("tags") or [],
                parameters=d.get("parameters") or {},
                schedules=schedules_of(d),
                paused=False,
            )
        )
    return out
