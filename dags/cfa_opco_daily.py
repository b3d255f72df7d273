"""
### CFA → OPCO daily flow

Every morning, for every ERP source of the CFA network:

1. **extract_dossiers** — the dossiers to transmit: new, changed or amended since their last
   transmission, selected by state in the connector's database (not by a clock window). The
   batch is frozen per DAG run: a retry or a rerun of the same run handles the same set.
2. **quality_gate** — Great Expectations suites (learners, companies, sessions, CFA sites,
   contract rules); a faulty dossier is quarantined with every anomaly, in words a CFA
   employee understands; reports per site in the reports folder (link in the run summary).
3. **plan_transmission** — each dossier to its OPCO (from the employer's IDCC) and to the
   key of its CFA's SIREN; what cannot be routed is reported "needs a human decision".
4. **opco_<code>.transmit** — one mapped task per (OPCO, SIREN) batch, in that OPCO's pool,
   through the exactly-once ledger (a rerun never sends a dossier twice, never loses one).
5. **wait_for_decisions** — deferrable sensor: until every dossier sent in this run is
   ENGAGE, REFUSE or ANNULE, or the run's deadline (the follow-up DAG carries on after).
6. **sync_echeances** — the payment schedule (échéances) of every dossier the OPCO engaged,
   read back, stored with its history and written back to the ERPs that allow it.
7. **send_invoices** — the ERPs' invoices frozen with the run (checked by the quality gate's
   suite `cfa_opco_facture`) sent to the OPCOs that take them by API, `POST /v1/factures`, exactly
   once per invoice and never two for one échéance; each invoice in one bucket (transmitted, to
   fix, waiting for ENGAGE, not transmissible, filtered, refused, in doubt, dry run, not
   processed), with the same `dry_run`, `only_opco` and `only_site` params as the dossiers.
8. **sync_factures** — what the OPCOs say of the invoices sent (this run's and earlier ones):
   paid (amount actually paid, transfer), paid in part, rejected with the reason; written back
   to the ERPs that allow it (the follow-up DAG keeps reading them every 30 minutes).
9. **run_summary** — extracted / passed quality / quarantined / transmitted / accepted /
   refused, the invoices' buckets, the cash view (`tresorerie.html`, `tresorerie.xlsx`:
   expected, invoiced, paid, overdue, rejected; per OPCO, site and month), and where the
   reports are.
10. **attention_needed** — fails (Variable `cfa_opco_unsent_outcome`: `fail`, the default;
   `skip`; `ignore`) when the run left dossiers unsent, blocked or in doubt, with the counts
   and the report's link: such a run does not end plain green.
11. **send_alerts** — alerts (off unless the Variable `cfa_opco_alerts` names a channel):
   dossiers in doubt, an OPCO's refusal or error rate over its threshold, one digest per
   site with its new blocking anomalies. A failed transmit task alerts at once (its
   `on_failure_callback`).

**Params** — `dry_run` (build and validate payloads, send nothing); `only_opco`, `only_site`
(restrict the transmission, invoices included); `resend` (numeroInterne to send again),
`resend_factures` (invoice numbers to send again) and `force_quality` (numeroInterne to let
through the gate), all with a mandatory `force_reason` kept in the ledger/audit trail; `reextract` (read the ERPs again for this run); `sources` (source ids).

**Schedule** — 06:00 Europe/Paris, Monday to Saturday, as a `CronTriggerTimetable`: the run
is keyed by its trigger time; no data interval is used anywhere.
"""
from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, TaskGroup, dag, task

from cfa_opco.alerts.callbacks import TransmitFailureAlert
from cfa_opco.opcos import opco_codes
from cfa_opco.providers.opco.operators.transmit import OpcoTransmitOperator
from cfa_opco.providers.opco.sensors.opco_states import OpcoDecisionSensor
from cfa_opco.writeback import ErpWriteback

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
        "dry_run": Param(False, type="boolean", description="Build and validate payloads, send nothing."),
        # optional text params allow null: the UI's trigger form disables "Trigger" while a
        # plain "string" param is left empty
        "only_opco": Param(None, type=["null", "string"], description="Transmit only to this OPCO (code, e.g. akto)."),
        "only_site": Param(None, type=["null", "string"], description="Transmit only this CFA site (site code)."),
        "resend": Param([], type="array", description="numeroInterne to send again (needs force_reason)."),
        "resend_factures": Param([], type="array",
                                 description="Invoice numbers (as in the ERP) to send again (needs force_reason)."),
        "force_quality": Param([], type="array",
                               description="numeroInterne to let through the quality gate (needs force_reason)."),
        "force_reason": Param(None, type=["null", "string"], description="Why: kept in the ledger and the audit trail."),
        "reextract": Param(False, type="boolean",
                           description="Read the ERPs again for this run instead of reusing its frozen batch."),
        "sources": Param([], type="array", description="Restrict to these source ids (empty: all)."),
        "decision_deadline_minutes": Param(60, type="integer", minimum=0,
                                           description="How long this run waits for the OPCOs' decisions "
                                                       "(the follow-up DAG carries on after)."),
    },
)
def cfa_opco_daily():
    @task
    def extract_dossiers(**context) -> dict:
        from cfa_opco.pipeline import daily

        return daily.extract(context)

    @task
    def quality_gate(extraction: dict, **context) -> dict:
        from cfa_opco.pipeline import daily

        return daily.quality(context, extraction)

    @task
    def plan_transmission(quality: dict, **context) -> dict:
        from cfa_opco.pipeline import daily

        return daily.plan(context, quality)

    @task
    def batches(opco_code: str, **context) -> list[dict]:
        from cfa_opco.pipeline import daily

        return daily.batches_for(context, opco_code)

    @task(trigger_rule="all_done")
    def run_summary(extraction: dict, quality: dict, planned: dict, **context) -> dict:
        from cfa_opco.pipeline import daily

        return daily.summarize(context, extraction, quality, planned)

    extraction = extract_dossiers()
    quality = quality_gate(extraction)
    planned = plan_transmission(quality)
    transmits = []
    for code in opco_codes():
        # one mapped task per (OPCO, SIREN) batch, in the OPCO's pool
        with TaskGroup(group_id=f"opco_{code}"):
            share = batches.override(task_id="batches")(code)
            planned >> share
            transmits.append(OpcoTransmitOperator.partial(task_id="transmit", pool=f"opco_{code}",
                                                          transmit="cfa_opco.opco_tasks.transmit",
                                                          on_failure_callback=TransmitFailureAlert())
                             .expand(batch=share))
    wait = OpcoDecisionSensor(
        task_id="wait_for_decisions",
        check="cfa_opco.opco_tasks.check_decisions",
        proof_sink="cfa_opco.proofs.ProofRecorder",   # the trigger's exchanges are proofs too
        run_id="{{ run_id }}",
        deadline="{{ params.decision_deadline_minutes * 60 }}",
        trigger_rule="all_done",
        done_when_only_incomplete=True,
        writeback=ErpWriteback(),   # decisions, refusal reasons and missing documents back to the ERPs
        poke_interval=10,
        timeout=6 * 3600,
    )

    @task(trigger_rule="all_done")
    def sync_echeances(**context) -> dict:
        from cfa_opco.pipeline import daily

        return daily.echeances(context)

    @task(trigger_rule="all_done")
    def send_invoices(**context) -> dict:
        from cfa_opco.pipeline import daily

        return daily.invoices(context)

    @task(trigger_rule="all_done")
    def sync_factures(**context) -> dict:
        from cfa_opco.pipeline import daily

        return daily.facture_states(context)

    @task   # fails with AirflowFailException: never retried
    def attention_needed(summary: dict, **context) -> dict:
        from cfa_opco.pipeline import daily

        return daily.attention(context, summary)

    summary = run_summary(extraction, quality, planned)
    transmits >> wait >> sync_echeances() >> send_invoices() >> sync_factures() >> summary
    attention_needed(summary)

    # alerts at the run's end (cfa_opco.alerts): off unless the Variable cfa_opco_alerts is set
    @task(trigger_rule="all_done")
    def send_alerts(**context) -> dict:
        from cfa_opco.alerts.callbacks import send_run_alerts

        return send_run_alerts(context)

    summary >> send_alerts()


cfa_opco_daily()
