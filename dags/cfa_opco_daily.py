"""
### CFA → OPCO daily flow

Every morning, for every ERP source of the CFA network:

1. **extract_dossiers** — the dossiers to transmit (new, changed or amended since their last
   transmission, selected by state in the connector's database, not by a clock window);
   the batch is frozen per DAG run, so a rerun of the same run handles the same set;
2. **run_summary** — counts (extracted, passed quality, quarantined, transmitted, accepted,
   refused) and where the reports are.

Params: `reextract` (read the ERPs again for this run), `sources` (restrict to some source ids).
Schedule: 06:00 Europe/Paris, Monday to Saturday (a `CronTriggerTimetable`: the run's
logical date is its trigger time; nothing depends on a data interval).
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task

DEFAULT_ARGS = {
    "owner": "cfa-data",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}


@dag(
    dag_id="cfa_opco_daily",
    schedule=CronTriggerTimetable("0 6 * * 1-6", timezone="Europe/Paris"),
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Paris"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["cfa", "opco", "apprentissage"],
    doc_md=__doc__,
    params={
        "reextract": Param(False, type="boolean",
                           description="Read the ERPs again for this run instead of reusing its frozen batch."),
        "sources": Param([], type="array", description="Restrict to these source ids (empty: all)."),
    },
)
def cfa_opco_daily():
    @task
    def extract_dossiers(**context) -> dict:
        from cfa_opco.pipeline import daily

        return daily.extract(context)

    @task
    def run_summary(extraction: dict, **context) -> dict:
        from cfa_opco.pipeline import daily

        return daily.summarize(context, extraction)

    run_summary(extract_dossiers())


cfa_opco_daily()
