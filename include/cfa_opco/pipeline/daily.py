"""Task bodies of the daily DAG (dags/cfa_opco_daily.py).

Each takes the Airflow context, works against the databases named by Airflow connections
and returns a small summary for XCom — identifiers and counts, never dossiers.
"""
from __future__ import annotations

import json
import logging

from cfa_opco.pipeline import config

log = logging.getLogger(__name__)


def _run_id(context) -> str:
    return context["dag_run"].run_id


def extract(context) -> dict:
    from cfa_opco.connector import migrate
    from cfa_opco.extraction import extract as extract_batch
    from cfa_opco.sources import load_sources

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
    return summary


def _requested_by(context) -> str:
    dag_run = context["dag_run"]
    return getattr(dag_run, "triggering_user_name", None) or "opérateur"


def _forced(context, key: str) -> list[dict]:
    params = context["params"]
    numeros = [n.strip() for n in (params.get(key) or []) if n and n.strip()]
    if not numeros:
        return []
    reason = (params.get("force_reason") or "").strip()
    if not reason:
        raise ValueError(f"param '{key}' names dossiers but 'force_reason' is empty: "
                         "a reason is required and kept in the audit trail")
    return [{"numero_interne": n, "reason": reason, "by": _requested_by(context)} for n in numeros]


def quality(context, extraction: dict) -> dict:
    from cfa_opco.quality.gate import run_quality_gate

    return run_quality_gate(_run_id(context), config.CONNECTOR_CONN_ID,
                            reports_dir=config.reports_dir(),
                            severity_overrides=config.rule_severity(),
                            forced=_forced(context, "force_quality"))


def plan(context, quality_summary: dict | None = None) -> dict:
    """Route the run's dossiers once (idempotent); return the counts."""
    from cfa_opco.transmission import plan as plan_run

    params = context["params"]
    result = plan_run(_run_id(context), config.CONNECTOR_CONN_ID,
                      only_opco=params.get("only_opco") or None, only_site=params.get("only_site") or None,
                      force=_forced(context, "resend"))
    summary = {k: v for k, v in result.items() if k != "batches"}
    summary["batches"] = {code: len(b) for code, b in result["batches"].items()}
    log.info("plan: %s", summary)
    return summary


def batches_for(context, opco_code: str) -> list[dict]:
    from cfa_opco.transmission import planned_batches

    return planned_batches(_run_id(context), config.CONNECTOR_CONN_ID, opco_code)


def run_counts(connector: str, run_id: str) -> dict:
    """What the ledger and the OPCOs' answers say of this run (the summary's truth)."""
    from cfa_opco.db.connect import connection

    with connection(connector) as conn, conn.cursor() as cur:
        cur.execute("""SELECT status, count(DISTINCT (source_id, numero_interne)) FROM transmission
                       WHERE run_id = %s AND operation = 'DOSSIER' GROUP BY status""", (run_id,))
        ledger = dict(cur.fetchall())
        cur.execute("""SELECT etat, count(*), count(*) FILTER (WHERE anomalies IS NOT NULL
                                                               AND anomalies::text NOT IN ('[]', 'null'))
                       FROM opco_dossier WHERE first_run_id = %s GROUP BY etat""", (run_id,))
        etats, incomplete = {}, 0
        for etat, n, inc in cur.fetchall():
            etats[etat] = n
            incomplete += inc
    return {"ledger": ledger, "etats": etats, "incomplete": incomplete}


def summarize(context, extraction: dict, quality: dict | None = None,
              planned: dict | None = None, decisions: dict | None = None) -> dict:
    """The run's summary: what a data engineer reads first, also written as JSON."""
    run_id = _run_id(context)
    counts = run_counts(config.CONNECTOR_CONN_ID, run_id)
    ledger, etats = counts["ledger"], counts["etats"]
    plan_summary = planned or {}
    summary = {
        "run_id": run_id,
        "extracted": extraction.get("extracted", 0),
        "passed_quality": (quality or {}).get("passed"),
        "quarantined": (quality or {}).get("quarantined"),
        "transmitted": ledger.get("SENT", 0),
        "accepted": etats.get("ENGAGE", 0),
        "refused": etats.get("REFUSE", 0),
        "pending_decision": sum(n for e, n in etats.items() if e in ("TRANSMIS", "EN_COURS_INSTRUCTION"))
        - counts["incomplete"],
        "incomplete": counts["incomplete"],
        "rejected_by_opco": ledger.get("REJECTED", 0),
        "in_doubt": ledger.get("PENDING", 0),
        "needs_human_decision": plan_summary.get("needs_human", 0),
        "not_transmissible_by_api": plan_summary.get("not_served", 0),
        "blocked": ledger.get("BLOCKED", 0),
        "dry_run": ledger.get("DRY_RUN", 0),
        "failed_sources": extraction.get("failed_sources", []),
        "reports": (quality or {}).get("report_index"),
    }
    out = config.reports_dir() / "runs"
    out.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)
    path = out / f"{safe}.summary.json"
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    summary["summary_file"] = str(path)
    log.info("run summary: %s", json.dumps(summary, ensure_ascii=False))
    if summary["failed_sources"]:
        raise RuntimeError(f"sources not extracted this run: {', '.join(summary['failed_sources'])} "
                           "(the other sources went through; see the extract_dossiers log)")
    return summary
