"""The follow-up DAG: a chosen trigger timetable, thin tasks, fast parse."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DAG_FILE = Path(__file__).resolve().parents[1] / "dags" / "cfa_opco_followup.py"


def test_followup_dag_structure():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    dag = bag.dags["cfa_opco_followup"]
    assert type(dag.timetable).__name__ == "CronTriggerTimetable" and "Europe/Paris" in repr(dag.timetable)
    assert dag.catchup is False and dag.max_active_runs == 1 and dag.tags and len(dag.doc_md) > 40
    assert {t.task_id for t in dag.tasks} == {"sync_states", "sync_echeances", "sync_factures", "cash_view", "settle_in_doubt", "follow_up_health",
                                               "check_keys"}
    assert all(t.retries >= 2 and t.owner == "cfa-data" for t in dag.tasks)


def test_followup_dag_parses_without_heavy_imports():
    code = ("import sys, importlib.util, airflow.sdk\nbefore=set(sys.modules)\n"
            f"spec=importlib.util.spec_from_file_location('d', {str(DAG_FILE)!r})\n"
            "m=importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "new=set(sys.modules)-before\n"
            "print(','.join(sorted(x for x in new if x.split('.')[0] in "
            "('cfa_opco','requests','httpx','psycopg2','pandas','fastapi'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
