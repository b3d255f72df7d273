"""The runs that have reports under the reports root: their counts, the runs home page and
the retention of old run folders.

One run = one folder (:func:`cfa_opco.report_location.run_folder`), holding:

- ``quality.json``   the quality gate's summary (written by the gate),
- ``summary.json``   the run summary (written by the ``run_summary`` task), and
  ``run_report.md`` its Markdown report,
- ``index.html`` ... the quality reports (:mod:`cfa_opco.quality.reports`).

Both JSON files carry the real run id (the folder name is a lossy form of it). The
Airflow plugin, the runs home page (``<root>/index.html``) and the retention all read the
folders through :func:`list_runs`.
"""
from __future__ import annotations

import html
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cfa_opco import report_location, report_store

log = logging.getLogger(__name__)

QUALITY_FILE = "quality.json"
SUMMARY_FILE = "summary.json"
RUN_REPORT_FILE = "run_report.md"
KEEP_VARIABLE = "cfa_opco_reports_keep_runs"
DEFAULT_KEEP = 90
_MARKERS = (report_location.INDEX, QUALITY_FILE, SUMMARY_FILE)

# the columns of the runs list: key -> French label
COUNT_LABELS = {
    "extracted": "Extraits",
    "passed": "Contrôle qualité OK",
    "quarantined": "En quarantaine",
    "transmitted": "Transmis",
    "blocked": "Bloqués",
    "in_doubt": "En doute",
}


@dataclass
class RunEntry:
    run_id: str
    folder: Path
    mtime: float
    has_report: bool
    counts: dict = field(default_factory=dict)
    complete: bool = False   # the run summary exists (the run got to run_summary)

    @property
    def url(self) -> str:
        return report_location.run_report_url(self.run_id)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def blocked_count(buckets: dict) -> int:
    """Dossiers blocked before the OPCO: a human decision is needed, or not transmissible."""
    return int(buckets.get("needs_human_decision", 0)) + int(buckets.get("not_transmissible", 0))


def run_entry(folder: Path) -> RunEntry | None:
    """The run held by ``folder``, or None when it is not a run folder."""
    markers = [folder / m for m in _MARKERS if (folder / m).exists()]
    if not folder.is_dir() or not markers:
        return None
    quality, summary = _read_json(folder / QUALITY_FILE), _read_json(folder / SUMMARY_FILE)
    run_id = summary.get("run_id") or quality.get("run_id") or folder.name
    counts = {k: None for k in COUNT_LABELS}
    if quality:
        counts.update(extracted=quality.get("checked"), passed=quality.get("passed"),
                      quarantined=quality.get("quarantined"))
    if summary:
        buckets = summary.get("buckets") or {}
        counts.update(extracted=summary.get("extracted"), transmitted=summary.get("transmitted"),
                      quarantined=summary.get("quarantined"), blocked=blocked_count(buckets),
                      in_doubt=buckets.get("in_doubt", 0))
        if summary.get("passed_quality") is not None:
            counts["passed"] = summary["passed_quality"]
    return RunEntry(run_id=run_id, folder=folder, mtime=max(m.stat().st_mtime for m in markers),
                    has_report=(folder / report_location.INDEX).exists(), counts=counts,
                    complete=bool(summary))


def list_runs(root: Path | None = None) -> list[RunEntry]:
    """Every run folder under the root, newest first."""
    root = Path(root) if root is not None else report_location.reports_root()
    if not root.is_dir():
        return []
    entries = [e for p in root.iterdir() if (e := run_entry(p)) is not None]
    return sorted(entries, key=lambda e: e.mtime, reverse=True)


def keep_runs() -> int:
    """How many run folders to keep (Variable ``cfa_opco_reports_keep_runs``, default 90;
    0 or less keeps them all)."""
    value = report_location._variable(KEEP_VARIABLE)
    try:
        return int(value) if value not in (None, "") else DEFAULT_KEEP
    except ValueError:
        log.warning("Variable %s is not a number (%r): keeping %d runs", KEEP_VARIABLE, value, DEFAULT_KEEP)
        return DEFAULT_KEEP


def prune(root: Path, keep: int, current: Path | None = None) -> list[Path]:
    """Delete the run folders beyond the ``keep`` newest (never ``current``), here and in
    the reports store; return them."""
    if keep <= 0:
        return []
    removed = []
    for entry in list_runs(root)[keep:]:
        if current is not None and entry.folder.resolve() == Path(current).resolve():
            continue
        shutil.rmtree(entry.folder, ignore_errors=True)
        report_store.remove(entry.folder.name)
        removed.append(entry.folder)
    if removed:
        log.info("reports retention (%d runs kept): %d old run folder(s) deleted", keep, len(removed))
    return removed


def _cell(value) -> str:
    return "—" if value is None else html.escape(str(value))


def runs_table(entries: list[RunEntry], href) -> str:
    """The runs as an HTML table; ``href(entry)`` gives each run's link (None: no link)."""
    if not entries:
        return "<p class='muted'>Aucun passage n'a encore de rapport.</p>"
    head = "".join(f"<th>{html.escape(label)}</th>" for label in COUNT_LABELS.values())
    rows = []
    for e in entries:
        link = href(e)
        name = html.escape(e.run_id)
        cell = f"<a href='{html.escape(link)}'>{name}</a>" if link else name
        state = "" if e.complete else " <span class='muted'>(résumé du run absent)</span>"
        if not e.has_report:
            state += " <span class='muted'>(pas de rapport qualité)</span>"
        attention = (e.counts.get("blocked") or 0) + (e.counts.get("in_doubt") or 0)
        rows.append(f"<tr{' class=attention' if attention else ''}><td>{cell}{state}</td>"
                    + "".join(f"<td class='num'>{_cell(e.counts.get(k))}</td>" for k in COUNT_LABELS) + "</tr>")
    return (f"<table class='runs'><thead><tr><th>Passage</th>{head}</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def write_home(root: Path) -> Path:
    """``<root>/index.html``: the runs, newest first, with their counts (a static copy of
    the plugin's list, for whoever opens the folder without Airflow)."""
    from cfa_opco.quality.reports import _page  # lazy: pandas (quality.reports) only when the home page is written

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    table = runs_table(list_runs(root),
                       lambda e: f"{e.folder.name}/{report_location.INDEX}" if e.has_report else None)
    cash = root / report_location.CASH_FOLDER / "tresorerie.html"
    link = (f"<p><a href='{report_location.CASH_FOLDER}/tresorerie.html'>Trésorerie, cumul de tous les passages</a> "
            "(échéances, factures, paiements des OPCO)</p>") if cash.exists() else ""
    path = root / report_location.INDEX
    path.write_text(_page("Rapports qualité", f"<h1>Rapports qualité des dossiers</h1>{link}{table}"),
                    encoding="utf-8")
    return path


def refresh(root: Path | None = None, current: Path | None = None) -> Path:
    """After a run wrote into its folder: apply the retention, rewrite the home page (over
    every run the reports store holds, when there is one) and publish both."""
    root = Path(root) if root is not None else report_location.reports_root()
    report_store.pull_runs(root)
    prune(root, keep_runs(), current)
    home = write_home(root)
    if current is not None:
        report_store.publish(Path(current), root)
    report_store.publish(root, root)
    return home
