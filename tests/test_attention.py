"""The daily DAG's last task, attention_needed: a run that left dossiers unsent, blocked or in
doubt does not end plain green; Variable cfa_opco_unsent_outcome chooses fail / skip /
ignore. (The real DAG run is tests/test_e2e_daily.py; this covers each outcome.)"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from cfa_opco import report_location
from cfa_opco.pipeline import daily

RUN = "manual__2026-09-01T06:00:00+00:00"
BLOCKED = {"run_id": RUN, "run_report": "run_report.md",
           "buckets": {"transmitted": 10, "quarantined": 2, "needs_human_decision": 3, "not_transmissible": 1,
                       "in_doubt": 0, "refused_by_opco": 0, "not_processed": 0}}
CLEAN = {"run_id": RUN, "buckets": {"transmitted": 10, "quarantined": 2, "needs_human_decision": 0}}


@pytest.fixture()
def context(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_REPORTS_DIR", str(tmp_path))
    return {"dag_run": SimpleNamespace(run_id=RUN)}


def _recorded() -> dict:
    return json.loads((report_location.run_folder(RUN) / "attention.json").read_text(encoding="utf-8"))


def test_fails_by_default_with_the_counts_and_the_report_link(context):
    with pytest.raises(AirflowFailException) as err:
        daily.attention(context, BLOCKED)
    message = str(err.value)
    assert "4 dossier(s) non transmis" in message and "3 décision humaine nécessaire" in message
    assert report_location.run_report_url(RUN) in message and "needs_human_decision=3" in message
    assert _recorded()["outcome"] == "fail"


@pytest.mark.parametrize("outcome", ["skip", "ignore"])
def test_skip_or_ignore_when_configured(context, monkeypatch, outcome):
    monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_UNSENT_OUTCOME", outcome)
    if outcome == "skip":
        with pytest.raises(AirflowSkipException):
            daily.attention(context, BLOCKED)
    else:
        assert daily.attention(context, BLOCKED)["outcome"] == "ignore"
    assert _recorded()["counts"]["not_transmissible"] == 1


def test_nothing_to_do_when_every_dossier_went_or_is_quarantined(context):
    assert daily.attention(context, CLEAN)["outcome"] == "ok"


def test_an_unknown_outcome_is_refused(context, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_UNSENT_OUTCOME", "warn")
    with pytest.raises(ValueError, match="cfa_opco_unsent_outcome"):
        daily.attention(context, BLOCKED)
