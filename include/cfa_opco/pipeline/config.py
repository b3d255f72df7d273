"""Run-time configuration read from Airflow Variables (with defaults), in one place."""
from __future__ import annotations

import json
from pathlib import Path

from airflow.sdk import Variable

from cfa_opco import settings

CONNECTOR_CONN_ID = "cfa_connector"


def variable(name: str, default=None, deserialize_json: bool = False):
    try:
        value = Variable.get(name, default=None)
    except Exception:  # no metadata database / API in some unit contexts
        value = None
    if value is None:
        return default
    if deserialize_json and isinstance(value, str):
        return json.loads(value)
    return value


def project_path(value: str | Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else settings.PROJECT_DIR / path


def sources_file() -> Path:
    return project_path(variable("cfa_opco_sources_file", "config/sources.yaml"))


def reports_dir() -> Path:
    """The reports root (Variable ``cfa_opco_reports_dir``): report_location decides, alone."""
    from cfa_opco import report_location  # lazy: pipeline.config is imported by every DAG task; the mapping only when asked

    return report_location.reports_root()


UNSENT_OUTCOMES = ("fail", "skip", "ignore")


def unsent_outcome() -> str:
    """What the ``attention_needed`` task does when a run left dossiers unsent (Variable
    ``cfa_opco_unsent_outcome``): "fail" (default), "skip" or "ignore"."""
    value = str(variable("cfa_opco_unsent_outcome", "fail") or "fail").strip().lower()
    if value not in UNSENT_OUTCOMES:
        raise ValueError(f"Variable cfa_opco_unsent_outcome = {value!r}: expected one of {', '.join(UNSENT_OUTCOMES)}")
    return value


def software() -> dict:
    return variable("cfa_opco_software", {"editeur": "CFA Network Data", "logiciel": "cfa-opco-connector",
                                          "version": "0.1.0"}, deserialize_json=True)


def rule_severity() -> dict:
    return variable("cfa_opco_rule_severity", {}, deserialize_json=True) or {}
