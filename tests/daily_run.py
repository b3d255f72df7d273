"""One real run of the daily DAG (``dag.test()``) against seeded ERPs, a connector database
and a running sandbox: the environment it needs and the run itself, shared by the end-to-end
test (tests/test_e2e_daily.py) and the browser tests' stack (tests/ui/conftest.py)."""
from __future__ import annotations

from pathlib import Path

from cfa_opco import settings
from tests import transmission_env
from tests.helpers import sources_file_for

DAG_ID = "cfa_opco_daily"


def daily_env(sandbox_port: int, erp: dict, connector: str, directory: Path,
              reports: Path | None = None) -> dict[str, str]:
    """The AIRFLOW_CONN_* / AIRFLOW_VAR_* variables of a run: the committed connections
    pointed at the sandbox and the test databases, the sources file of ``erp`` (written in
    ``directory``) and, when given, the reports root (Variable cfa_opco_reports_dir)."""
    env = transmission_env.opco_connection_env(sandbox_port, extra_overrides={"rate_limit_per_second": 0}, dsns={
        "cfa_erp_main": erp["erp_main"], "cfa_erp_est": erp["erp_est"], "cfa_connector": connector})
    env["AIRFLOW_VAR_CFA_OPCO_SOURCES_FILE"] = str(sources_file_for(erp, directory))
    if reports is not None:
        env["AIRFLOW_VAR_CFA_OPCO_REPORTS_DIR"] = str(reports)
    return env


def run_daily(conf: dict | None = None):
    """Run the project's daily DAG once in this process; return its DagRun."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(settings.PROJECT_DIR / "dags")).dags[DAG_ID]
    return dag.test(run_conf=conf or {})


def task_states(dag_run) -> dict[str, str]:
    """{task_id: state} of a finished run (mapped tasks: the worst of their instances)."""
    from airflow.utils.session import create_session

    from airflow.models import TaskInstance

    order = ["failed", "upstream_failed", "skipped", "success"]
    states: dict[str, str] = {}
    with create_session() as session:
        for ti in session.query(TaskInstance).filter(TaskInstance.dag_id == dag_run.dag_id,
                                                     TaskInstance.run_id == dag_run.run_id):
            state = str(getattr(ti.state, "value", ti.state))
            prev = states.get(ti.task_id)
            if prev is None or (state in order and (prev not in order or order.index(state) < order.index(prev))):
                states[ti.task_id] = state
    return states


def state_name(state) -> str:
    return str(getattr(state, "value", state))
