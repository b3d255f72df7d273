"""
### CFA → OPCO follow-up of decisions

Keeps reading what the OPCOs decided on the dossiers already sent, long after the daily run
that sent them has finished (instruction takes days or weeks):

1. **sync_states** — for every OPCO connection (OPCO × SIREN key) holding dossiers still
   open in the connector's database: v2 OPCOs are read through `/v2/dossiers/etats` over
   the window since the last read (cost grows with the number of changes, not with the
   stock), v1-only OPCOs through `/v1/dossiers/liste` (100 dossiers per call). States,
   refusal motives and missing documents land in `opco_dossier` / `opco_state_change`.
2. **check_keys** — asks each OPCO key for its expiry date (`/v2/cfakeyinfo`) and logs a
   warning for every key expiring within `cfa_opco_key_expiry_warning_days` days
   (Variable, default 30), so a new key is requested from the OPCO's extranet in time.

Schedule: every 30 minutes, 07:00–20:30 Europe/Paris, Monday to Saturday (a
`CronTriggerTimetable`: the OPCOs instruct during office hours; nothing depends on a data
interval, each run reads from its own watermark). One run at a time, no catch-up: a missed
run is simply covered by the next window.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, task

DEFAULT_ARGS = {
    "owner": "cfa-data",
    "retries": 2,
    "retry_delay": timedelta(minutes=3),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(minutes=25),
}


@dag(
    dag_id="cfa_opco_followup",
    schedule=CronTriggerTimetable("*/30 7-20 * * 1-6", timezone="Europe/Paris"),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["cfa", "opco", "apprentissage", "suivi"],
    doc_md=__doc__,
)
def cfa_opco_followup():
    @task
    def sync_states(**context) -> dict:
        from cfa_opco.followup import sync_states as sync
        from cfa_opco.pipeline.config import CONNECTOR_CONN_ID, software

        from cfa_opco.writeback import ErpWriteback

        result = sync(CONNECTOR_CONN_ID, run_id=context["run_id"], software=software(), writeback=ErpWriteback())
        for conn_id, error in result["errors"].items():
            context["ti"].log.warning("suivi %s impossible : %s", conn_id, error)
        per = {k: {"requests": v["requests"], "changes": v["changes"]} for k, v in result["per_connection"].items()}
        return {"connections": result["connections"], "requests": result["requests"], "changes": result["changes"],
                "by_etat": result["by_etat"], "errors": result["errors"], "per_connection": per}

    @task
    def check_keys(**context) -> dict:
        from cfa_opco.followup import key_warnings
        from cfa_opco.pipeline.config import CONNECTOR_CONN_ID, software, variable

        days = int(variable("cfa_opco_key_expiry_warning_days", 30))
        warnings = key_warnings(CONNECTOR_CONN_ID, days, software=software())
        for conn_id, text in warnings.items():
            context["ti"].log.warning("%s", text)
        return {"days": days, "warnings": warnings}

    sync_states()
    check_keys()


cfa_opco_followup()
