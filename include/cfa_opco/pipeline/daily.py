"""Task bodies of the daily DAG (dags/cfa_opco_daily.py).

Each takes the Airflow context, works against the databases named by Airflow connections
and returns a small summary for XCom — identifiers and counts, never dossiers.
"""
from __future__ import annotations

import json
import logging

from cfa_opco import report_location, report_runs, report_store
from cfa_opco.connector import migrate
from cfa_opco.extraction import extract as extract_batch
from cfa_opco.factures import stage_invoices
from cfa_opco.pipeline import config, run_report
from cfa_opco.pipeline.invoicing import check_invoice_totals, invoice_buckets
from cfa_opco.sources import load_sources
from cfa_opco.outbox import plan as plan_run
from cfa_opco.outbox import planned_batches

log = logging.getLogger(__name__)


def _run_id(context) -> str:
    return context["dag_run"].run_id


def extract(context) -> dict:
    params = context["params"]
    migrate(config.CONNECTOR_CONN_ID)
    sources = load_sources(config.sources_file())
    wanted = params.get("sources") or []
    if wanted:
        unknown = sorted(set(wanted) - {s.id for s in sources})
        if unknown:
            raise ValueError(f"param 'sources' names unknown sources: {', '.join(unknown)}; "
                             f"configured: {', '.join(s.id for s in sources)}")
        sources = [s for s in sources if s.id in wanted]
    logical = context.get("logical_date")
    summary = extract_batch(_run_id(context), sources, config.CONNECTOR_CONN_ID,
                            logical_date=logical.date() if logical else None,
                            reextract=bool(params.get("reextract")))
    # the ERPs' invoices, frozen with the run (issue 12): a small summary for XCom
    summary["invoices"] = stage_invoices(_run_id(context), sources, config.CONNECTOR_CONN_ID,
                                         reextract=bool(params.get("reextract")),
                                         resend=[f["numero_facture"] for f in
                                                 _forced(context, "resend_factures", "numero_facture")])
    return summary


def _requested_by(context) -> str:
    dag_run = context["dag_run"]
    return getattr(dag_run, "triggering_user_name", None) or "opérateur"


def _forced(context, key: str, field: str = "numero_interne") -> list[dict]:
    """What the param ``key`` names to force (dossiers, or invoices with ``field`` numero_facture),
    each with the run's mandatory ``force_reason`` and who asked."""
    params = context["params"]
    numeros = [n.strip() for n in (params.get(key) or []) if n and n.strip()]
    if not numeros:
        return []
    reason = (params.get("force_reason") or "").strip()
    if not reason:
        what = "invoices" if field == "numero_facture" else "dossiers"
        raise ValueError(f"param '{key}' names {what} but 'force_reason' is empty: "
                         "a reason is required and kept in the audit trail")
    return [{field: n, "reason": reason, "by": _requested_by(context)} for n in numeros]


def quality(context, extraction: dict) -> dict:
    # every task of the daily DAG imports this module; only this one needs pandas and GX
    from cfa_opco.quality.gate import run_quality_gate  # lazy: pandas + GX (seconds), quality task only

    # no reports_dir: the gate writes into the run's own folder (report_location.run_folder)
    return run_quality_gate(_run_id(context), config.CONNECTOR_CONN_ID,
                            severity_overrides=config.rule_severity(),
                            forced=_forced(context, "force_quality"))


def plan(context, quality_summary: dict | None = None) -> dict:
    """Route the run's dossiers once (idempotent); return the counts."""
    params = context["params"]
    result = plan_run(_run_id(context), config.CONNECTOR_CONN_ID,
                      only_opco=params.get("only_opco") or None, only_site=params.get("only_site") or None,
                      force=_forced(context, "resend"))
    summary = {k: v for k, v in result.items() if k != "batches"}
    summary["batches"] = {code: len(b) for code, b in result["batches"].items()}
    log.info("plan: %s", summary)
    return summary


def batches_for(context, opco_code: str) -> list[dict]:
    return planned_batches(_run_id(context), config.CONNECTOR_CONN_ID, opco_code)


def echeances(context) -> dict:
    """The payment schedules of the dossiers the OPCOs engaged (read, stored, written back)."""
    from cfa_opco.echeances import sync_echeances  # lazy: the échéances task only
    from cfa_opco.writeback import ErpWriteback  # lazy: the échéances task only

    return sync_echeances(config.CONNECTOR_CONN_ID, run_id=_run_id(context), software=config.software(),
                          writeback=ErpWriteback())


def invoices(context) -> dict:
    """Send the run's invoices that may leave; return the counts (decisions, buckets, per key)."""
    from cfa_opco.pipeline.invoicing import send_invoices  # lazy: the invoices task only

    params = context["params"]
    out = send_invoices(_run_id(context), config.CONNECTOR_CONN_ID, dry_run=bool(params.get("dry_run")),
                        only_opco=params.get("only_opco") or None, only_site=params.get("only_site") or None,
                        software=config.software(), force=_forced(context, "resend_factures", "numero_facture"))
    return {"decisions": out["decisions"], "buckets": out["buckets"], "errors": out["errors"],
            "batches": {k: {n: v for n, v in b.items() if v} for k, b in out["batches"].items()}}


def facture_states(context) -> dict:
    """What the OPCOs say of the invoices sent (this run's and earlier ones): paid, paid in part,
    rejected; written back to the ERPs that allow it."""
    from cfa_opco.facture_followup import sync_factures, task_summary  # lazy: this task only
    from cfa_opco.writeback import ErpWriteback  # lazy: this task only

    return task_summary(sync_factures(config.CONNECTOR_CONN_ID, run_id=_run_id(context), software=config.software(),
                                      writeback=ErpWriteback().factures))


def summarize(context, extraction: dict, quality: dict | None = None,
              planned: dict | None = None, decisions: dict | None = None) -> dict:
    """The run's summary: every extracted dossier in exactly one bucket (the ledger's and the
    OPCOs' truth), written as JSON and as a Markdown run report; fails loudly when the
    counts do not add up or a source could not be read."""
    run_id = _run_id(context)
    result = run_report.run_buckets(config.CONNECTOR_CONN_ID, run_id)
    b, d = result["buckets"], result["decisions"]
    summary = {
        "run_id": run_id,
        "extracted": extraction.get("extracted", 0),
        "buckets": b,
        "decisions": d,
        "passed_quality": (quality or {}).get("passed"),
        "quarantined": b["quarantined"],
        "transmitted": b["transmitted"],
        "accepted": d["accepted"],
        "refused": d["refused"],
        "pending_decision": d["pending_decision"],
        "incomplete": d["incomplete"],
        "suivi_impossible": d["suivi_impossible"],
        "rejected_by_opco": b["refused_by_opco"],
        "in_doubt": b["in_doubt"],
        "waiting": b["waiting"],
        "needs_human_decision": b["needs_human_decision"],
        "not_transmissible": b["not_transmissible"],
        "dry_run": b["dry_run"],
        "not_processed": b["not_processed"],
        "reasons": result["reasons"],
        "following": run_report.following_exchanges(config.CONNECTOR_CONN_ID, run_id),
        "failed_sources": extraction.get("failed_sources", []),
        # ERP rows that could not be staged at all (no readable numero_interne): not dossiers
        # of the run, shown apart so that nothing read from an ERP goes unmentioned
        "rows_not_staged": extraction.get("rejected_rows", 0) + sum(
            (src or {}).get("duplicates_count", 0) for src in (extraction.get("by_source") or {}).values()),
        "reports": (quality or {}).get("report_index"),
    }
    # the run's invoices: one bucket each, counts that add up like the dossiers'
    invoices = invoice_buckets(config.CONNECTOR_CONN_ID, run_id)
    summary["invoices"] = {"staged": invoices["staged"], "buckets": invoices["buckets"],
                           "by_opco": invoices["by_opco"], "reasons": invoices["reasons"]}
    # one run = one folder: the summary and the run report next to the quality reports
    out = report_location.run_folder(run_id)
    out.mkdir(parents=True, exist_ok=True)
    # the cash view (échéances, invoices, payments: this run and cumulative), next to them
    summary["cash"] = cash_view(out, run_id)
    path = out / report_runs.SUMMARY_FILE
    summary["report_url"] = report_location.run_report_url(run_id)
    summary["run_report"] = str(run_report.write_markdown(out / report_runs.RUN_REPORT_FILE, summary, result,
                                                          invoices=invoices))
    summary["summary_file"] = str(path)
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    report_runs.refresh(out.parent, current=out)
    log.info("run summary: %s", json.dumps({k: v for k, v in summary.items() if k != "reasons"}, ensure_ascii=False))
    for bucket in ("in_doubt", "waiting", "not_processed"):
        if b[bucket]:
            log.warning("%d dossier(s) %s: %s (run report: %s)", b[bucket], run_report.BUCKETS[bucket],
                        result["reasons"].get(bucket), summary["run_report"])
    if d["suivi_impossible"]:
        log.warning("%d dossier(s) transmis en suivi impossible (l'OPCO ne peut pas être lu) : voir le DAG "
                    "cfa_opco_followup (tâche follow_up_health) et le rapport %s", d["suivi_impossible"],
                    summary["run_report"])
    run_report.check_totals(summary["extracted"], result)
    check_invoice_totals(invoices)
    if summary["failed_sources"]:
        raise RuntimeError(f"sources not extracted this run: {', '.join(summary['failed_sources'])} "
                           "(the other sources went through; see the extract_dossiers log)")
    return summary


def cash_view(folder, run_id: str | None) -> dict:
    """Write tresorerie.html / tresorerie.xlsx into ``folder``; their small summary."""
    from cfa_opco.cash.report import write_cash_view  # lazy: openpyxl only when summarising
    from cfa_opco.db.connect import connection  # lazy: beside the lazy cash view import

    with connection(config.CONNECTOR_CONN_ID) as conn:
        return write_cash_view(conn, run_id, folder)


def cumulative_cash_view() -> dict:
    """The cash view of every run so far, in the reports root's ``tresorerie/`` (published to
    the reports store when there is one); the runs' home page links to it."""
    folder = report_location.cash_folder()
    out = cash_view(folder, None)
    (folder / "tresorerie.json").write_text(json.dumps(out, indent=2, ensure_ascii=False), encoding="utf-8")
    report_runs.refresh(folder.parent)
    report_store.publish(folder, folder.parent)
    return out


# the run_summary buckets an operator must act on: the run must not end plain green
ATTENTION_BUCKETS = ("needs_human_decision", "not_transmissible", "in_doubt", "refused_by_opco", "not_processed")


def attention_message(summary: dict) -> str | None:
    """A French/English message listing what the run left for someone, or None."""
    buckets = summary.get("buckets") or {}
    counts = {b: int(buckets.get(b) or 0) for b in ATTENTION_BUCKETS}
    if not any(counts.values()):
        return None
    labels = {b: run_report.BUCKETS[b].split(" (")[0] for b in ATTENTION_BUCKETS}
    parts = "; ".join(f"{n} {labels[b][0].lower()}{labels[b][1:]}" for b, n in counts.items() if n)
    en = ", ".join(f"{b}={n}" for b, n in counts.items() if n)
    return (f"Run {summary.get('run_id')} : {sum(counts.values())} dossier(s) non transmis à traiter — {parts}. "
            f"Rapport : {summary.get('report_url') or report_location.run_report_url(summary.get('run_id', ''))} "
            f"(résumé : {summary.get('run_report')}). "
            f"[EN] {sum(counts.values())} dossier(s) left unsent, blocked or in doubt ({en}).")


def attention(context, summary: dict | None) -> dict:
    """The DAG's last task: fail (or skip) when the run left dossiers unsent, blocked or in
    doubt, so the run does not end plain green (Variable ``cfa_opco_unsent_outcome``).
    Writes ``attention.json`` into the run's folder (read by ``make demo``)."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException  # lazy: only the attention task raises them

    if not summary:   # run_summary failed: its own failure already shows
        return {"outcome": "no_summary"}
    outcome = config.unsent_outcome()
    message = attention_message(summary)
    result = {"run_id": summary.get("run_id"), "outcome": "ok" if message is None else outcome,
              "message": message, "counts": {b: (summary.get("buckets") or {}).get(b, 0) for b in ATTENTION_BUCKETS}}
    folder = report_location.run_folder(_run_id(context))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "attention.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    report_store.publish(folder, names=["attention.json"])
    if message is None:
        log.info("nothing left unsent: every dossier transmitted or quarantined")
        return result
    if outcome == "fail":
        raise AirflowFailException(message)   # no retry: the dossiers will not move by themselves
    log.warning("%s", message)
    if outcome == "skip":
        raise AirflowSkipException(message)
    return result
