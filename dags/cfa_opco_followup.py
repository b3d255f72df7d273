"""
### CFA → OPCO follow-up of decisions

Keeps reading what the OPCOs decided on the dossiers already sent, long after the daily run
that sent them has finished (instruction takes days or weeks):

1. **sync_states** — for every OPCO connection (OPCO × SIREN key) holding dossiers still
   open in the connector's database: v2 OPCOs are read through `/v2/dossiers/etats` over
   the window since the last read (cost grows with the number of changes, not with the
   stock), v1-only OPCOs through `/v1/dossiers/liste` (100 dossiers per call). States,
   refusal motives and missing documents land in `opco_dossier` / `opco_state_change`.
2. **sync_echeances** — the payment schedule (échéances) of every dossier the OPCO engaged,
   read back once (and again after 24 h) through `GET /v2/dossiers?numeroInterne=`, stored
   with its history (`opco_echeance`, `opco_echeance_history`) and written back to the ERPs
   whose source has an `echeance` write-back statement.
3. **sync_factures** — what each OPCO says of the invoices sent: `/v2/factures/etats` over the
   window since the last read where the OPCO serves it (paid with the amount actually paid and
   the transfer, paid in part, rejected with the OPCO's reason), else paid once the dossier is
   `SOLDE`; kept in `opco_facture` / `opco_facture_history` and written back to the ERPs whose
   source has a `facture` write-back statement.
   Then **cash_view** refreshes the cumulative cash view (`tresorerie/` beside the runs' report
   folders, linked from their home page).
4. **settle_in_doubt** — every dossier left "in doubt" by a send whose answer was lost
   (PENDING in the ledger, whatever the run) is read back at its OPCO; found, it is recorded
   as sent; provably absent, it is sent (once); unreadable, it stays in doubt, counted, and
   the next run of this DAG tries again.
5. **follow_up_health** — fails, naming the OPCO and the key, when a key's polls have
   failed `poll_failure_limit` times in a row (param, else Variable
   `cfa_opco_poll_failure_limit`, default 5): its open dossiers are marked "suivi impossible"
   with the reason; the other keys' decisions were recorded by sync_states all the same.
6. **check_keys** — asks each OPCO key for its expiry date (`/v2/cfakeyinfo`) and logs a
   warning for every key expiring within `cfa_opco_key_expiry_warning_days` days
   (Variable, default 30), so a new key is requested from the OPCO's extranet in time; with
   alerts on (Variable `cfa_opco_alerts`), each such key is alerted about, at most once a day.
   What each check read (expiry date, status, warning; never the key) is kept in the
   connector's `opco_key_status` table: the "Dossiers OPCO" view's keys page shows it.

Schedule: every 30 minutes, 07:00–20:30 Europe/Paris, Monday to Saturday (a
`CronTriggerTimetable`: the OPCOs instruct during office hours; nothing depends on a data
interval, each run reads from its own watermark). One run at a time, no catch-up: a missed
run is simply covered by the next window.
"""
from __future__ import annotations

import logging
from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task

log = logging.getLogger(__name__)

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
    params={
        "poll_failure_limit": Param(None, type=["null", "integer"], minimum=1,
                                    description="Failing polls in a row before a key's dossiers are marked "
                                                "'suivi impossible' (empty: Variable cfa_opco_poll_failure_limit, 5)."),
    },
)
def cfa_opco_followup():
    @task
    def sync_states(**context) -> dict:
        from cfa_opco.followup import sync_states as sync
        from cfa_opco.pipeline.config import CONNECTOR_CONN_ID, software

        from cfa_opco.writeback import ErpWriteback

        result = sync(CONNECTOR_CONN_ID, run_id=context["run_id"], software=software(), writeback=ErpWriteback(),
                      poll_failure_limit=context["params"].get("poll_failure_limit"))
        for conn_id, error in result["errors"].items():
            log.warning("lecture de suivi %s en échec (%d de suite) : %s", conn_id,
                                      result["poll_failures"].get(conn_id, 0), error)
        per = {k: {"requests": v["requests"], "changes": v["changes"]} for k, v in result["per_connection"].items()}
        return {"connections": result["connections"], "requests": result["requests"], "changes": result["changes"],
                "by_etat": result["by_etat"], "errors": result["errors"], "per_connection": per,
                "poll_failures": result["poll_failures"], "suivi_impossible": result["suivi_impossible"]}

    @task(trigger_rule="all_done")
    def sync_echeances(**context) -> dict:
        from cfa_opco.echeances import sync_echeances as sync
        from cfa_opco.pipeline.config import CONNECTOR_CONN_ID, software
        from cfa_opco.writeback import ErpWriteback

        result = sync(CONNECTOR_CONN_ID, run_id=context["run_id"], software=software(), writeback=ErpWriteback())
        if result["errors_count"]:
            log.warning("%d échéancier(s) illisible(s) : %s", result["errors_count"],
                        "; ".join(f"{n} : {e}" for n, e in list(result["errors"].items())[:5]))
        return result

    @task(trigger_rule="all_done")
    def sync_factures(**context) -> dict:
        from cfa_opco.facture_followup import sync_factures as sync, task_summary
        from cfa_opco.pipeline.config import CONNECTOR_CONN_ID, software
        from cfa_opco.writeback import ErpWriteback

        return task_summary(sync(CONNECTOR_CONN_ID, run_id=context["run_id"], software=software(),
                                 writeback=ErpWriteback().factures))

    @task(trigger_rule="all_done")
    def cash_view(**context) -> dict:
        from cfa_opco.pipeline.daily import cumulative_cash_view

        return cumulative_cash_view()

    @task
    def settle_in_doubt(**context) -> dict:
        from cfa_opco.outbox import settle_in_doubt as settle
        from cfa_opco.pipeline.config import CONNECTOR_CONN_ID, software

        result = settle(CONNECTOR_CONN_ID, software=software())
        if result["after"]:
            log.warning("%d dossier(s) toujours en doute (réponse perdue, OPCO illisible) : "
                                      "le prochain run de ce DAG les relit encore", result["after"])
        return {"before": result["before"], "after": result["after"], "errors": result["errors"],
                "per_batch": {k: {n: v.get(n, 0) for n in ("resolved_in_doubt", "sent", "in_doubt")}
                              for k, v in result["per_batch"].items()}}

    @task(trigger_rule="all_done")
    def follow_up_health(**context) -> dict:
        """Fails, naming each key, when a key cannot be read any more: visible, not a green wait."""
        from airflow.sdk.exceptions import AirflowFailException

        from cfa_opco.followup import failure_limit, poll_health
        from cfa_opco.pipeline.config import CONNECTOR_CONN_ID

        limit = failure_limit(context["params"].get("poll_failure_limit"))
        health = poll_health(CONNECTOR_CONN_ID)
        failing = {k: v for k, v in health.items() if v["consecutive_failures"] >= limit}
        for conn_id, h in health.items():
            log.warning("%s : %d lecture(s) de suivi en échec de suite (limite %d), %d dossier(s) "
                                      "en suivi impossible — %s", conn_id, h["consecutive_failures"], limit,
                                      h["dossiers"], h["last_error"])
        if failing:
            raise AirflowFailException(
                "Suivi impossible pour " + "; ".join(
                    f"{cid} ({h['consecutive_failures']} échecs de suite, {h['dossiers']} dossier(s)) : "
                    f"{(h['last_error'] or '')[:200]}" for cid, h in failing.items())
                + " — les décisions des autres OPCO ont été enregistrées ; vérifiez la clé et l'API de ces OPCO")
        return {"limit": limit, "failing_polls": {k: v["consecutive_failures"] for k, v in health.items()}}

    @task
    def check_keys(**context) -> dict:
        from cfa_opco.alerts.callbacks import key_expiry_days, send_key_alerts
        from cfa_opco.followup import key_warnings
        from cfa_opco.pipeline.config import CONNECTOR_CONN_ID, software, variable

        days = key_expiry_days(int(variable("cfa_opco_key_expiry_warning_days", 30)))
        # key_warnings logs each warning itself (the Task SDK's ti has no .log: it failed the task)
        warnings = key_warnings(CONNECTOR_CONN_ID, days, software=software())
        alerted = send_key_alerts(warnings, days, context)   # nothing when alerts are off
        return {"days": days, "warnings": warnings, "alerted": alerted}

    synced = sync_states()
    synced >> settle_in_doubt()
    synced >> sync_echeances()
    synced >> sync_factures() >> cash_view()
    synced >> follow_up_health()
    check_keys()


cfa_opco_followup()
