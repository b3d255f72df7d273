"""Where a DAG run's reports live, and the URLs that open them: the one run → report folder
mapping, used by the quality gate, the run summary, the Airflow UI plugins, the alerts and
the tests.

The reports root is the Airflow Variable ``cfa_opco_reports_dir`` when it is set (a relative
path is taken from the project folder), else ``settings.REPORTS_DIR`` (env
``CFA_REPORTS_DIR``, default ``var/reports``). The Variable may also be an object-store URL
(``s3://…``; :mod:`cfa_opco.report_store`): the root is then a local working copy. Every run has its own folder under the root,
named from its run id by :func:`run_folder_name`; earlier runs stay readable.

Works in a task (the Task SDK reads the Variable through the supervisor) and in the API
server (the plugin: the Variable comes from the metadata database).
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from cfa_opco import settings

REPORTS_VARIABLE = "cfa_opco_reports_dir"
QUALITY_UI_PREFIX = "/cfa-quality"    # the quality reports plugin's FastAPI mount point
INDEX = "index.html"
CASH_FOLDER = "tresorerie"            # the cumulative cash view, refreshed by the follow-up DAG


def _variable(name: str) -> str | None:
    try:
        from airflow.sdk import Variable  # lazy: command-line tools run without Airflow

        return Variable.get(name, default=None)
    except Exception:  # no Airflow context at all (command-line tools, some unit tests)
        return None


def reports_store_url() -> str | None:
    """The Variable when it names an object store (``s3://…``, ``file:///…``): the reports
    are then published there (:mod:`cfa_opco.report_store`); None for a local folder."""
    value = (_variable(REPORTS_VARIABLE) or "").strip()
    return value.rstrip("/") if "://" in value else None


def reports_root() -> Path:
    """The local folder that holds every run's report folder (with an object store, the
    working copy each task writes into and publishes from)."""
    value = _variable(REPORTS_VARIABLE)
    if not value or "://" in value:
        return Path(settings.REPORTS_DIR)
    path = Path(value)
    return path if path.is_absolute() else settings.PROJECT_DIR / path


def _slug(text: str, strip: str) -> str:
    """A file-system-safe name: runs of other characters become one dash."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(strip)


def run_folder_name(run_id: str) -> str:
    """A folder name for a run id (``manual__2026-09-01T06:00:00+00:00`` ->
    ``manual__2026-09-01T06-00-00-00-00``)."""
    return _slug(run_id, "-.") or "run"


def run_folder(run_id: str, root: Path | None = None) -> Path:
    """The folder of one run's reports (``<root>/<run folder name>``)."""
    return (Path(root) if root is not None else reports_root()) / run_folder_name(run_id)


def run_report_url(run_id: str) -> str:
    """The UI path that opens a run's report (relative to the Airflow base URL)."""
    return f"{QUALITY_UI_PREFIX}/runs/{quote(run_id, safe='')}"


def site_page(site: str) -> str:
    """A site's page inside a run's folder (``sites/<site>.html``)."""
    return f"sites/{_slug(str(site), '-') or 'site'}.html"


def site_report_url(run_id: str, site: str) -> str:
    """The UI path of one site's quality page of a run (its quality lead's digest links it)."""
    return f"{QUALITY_UI_PREFIX}/reports/{quote(run_folder_name(run_id))}/{quote(site_page(site))}"


def cash_folder() -> Path:
    """The cumulative cash view's folder, beside the runs' folders."""
    return reports_root() / CASH_FOLDER
