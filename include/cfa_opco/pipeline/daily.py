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


def summarize(context, extraction: dict, quality: dict | None = None,
              transmission: dict | None = None, follow_up: dict | None = None) -> dict:
    """The run's summary: what a data engineer reads first, also written as JSON."""
    summary = {
        "run_id": _run_id(context),
        "extracted": extraction.get("extracted", 0),
        "passed_quality": (quality or {}).get("passed"),
        "quarantined": (quality or {}).get("quarantined"),
        "transmitted": (transmission or {}).get("transmitted"),
        "accepted": (follow_up or {}).get("accepted"),
        "refused": (follow_up or {}).get("refused"),
        "failed_sources": extraction.get("failed_sources", []),
        "reports": (quality or {}).get("report_index"),
    }
    out = config.reports_dir() / "runs"
    out.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in summary["run_id"])
    path = out / f"{safe}.summary.json"
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    summary["summary_file"] = str(path)
    log.info("run summary: %s", json.dumps(summary, ensure_ascii=False))
    if summary["failed_sources"]:
        raise RuntimeError(f"sources not extracted this run: {', '.join(summary['failed_sources'])} "
                           "(the other sources went through; see the extract_dossiers log)")
    return summary
