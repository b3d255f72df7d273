"""Airflow 3 UI plugin: the runs' reports, inside the Airflow UI.

- a FastAPI sub-application mounted at ``/cfa-quality`` (``fastapi_apps``) that serves the
  reports root (``report_location.reports_root()``: the Variable ``cfa_opco_reports_dir``
  when set, read from the metadata database in the API server, else settings.REPORTS_DIR):
  ``/cfa-quality/`` lists the runs newest first with their counts,
  ``/cfa-quality/runs/<run id>`` opens a run's report (a French 404 page, with a link back
  to the list, when the run has none yet), ``/cfa-quality/reports/...`` serves the files
  (HTML pages, Excel, CSV, the run summary, Great Expectations Data Docs);
- two ``external_views``: a "Qualité des dossiers" entry in the navigation menu, and a
  "Rapport qualité" tab on every DAG run (``{RUN_ID}`` is filled in by the UI).

Every route requires an authenticated Airflow user (the UI's JWT cookie or a bearer
token): the reports carry (masked) personal data. Nothing heavy is imported at load time.
The run → folder mapping is report_location's, never recomputed here.
"""
import html
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from cfa_opco import report_location, report_runs, report_store

URL_PREFIX = report_location.QUALITY_UI_PREFIX

_STYLE = ("body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}"
          "table{border-collapse:collapse;font-size:14px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}"
          "th{background:#f4f4f4}td.num{text-align:right}tr.attention td{background:#fff4e5}"
          ".muted{color:#777}a{color:#1f5fa8}")


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html lang='fr'><head><meta charset='utf-8'><title>{html.escape(title)}"
                        f"</title><style>{_STYLE}</style></head><body>{body}</body></html>",
                        status_code=status_code)


def create_app(authenticated: bool = True):
    deps = []
    if authenticated:
        from airflow.api_fastapi.core_api.security import requires_authenticated

        deps = [Depends(requires_authenticated())]

    app = FastAPI(title="CFA OPCO — rapports qualité", dependencies=deps)

    def base(request: Request) -> str:
        return request.scope.get("root_path", "")

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        root = report_location.reports_root()
        report_store.pull_runs(root)      # (an object store: what every worker published)
        entries = report_runs.list_runs(root)[:500]
        table = report_runs.runs_table(
            entries, lambda e: f"{base(request)}/runs/{quote(e.run_id, safe='')}" if e.has_report else None)
        return _page("Qualité des dossiers",
                     "<h1>Rapports qualité des dossiers d'apprentissage</h1>"
                     "<p class='muted'>Un passage par ligne, le plus récent en premier : dossiers extraits, "
                     "passés au contrôle qualité, en quarantaine, transmis aux OPCO, bloqués (décision humaine "
                     "nécessaire ou non transmissibles) et en doute.</p>" + table)

    @app.get("/runs/{run_id:path}")
    def run_report(run_id: str, request: Request):
        folder = report_location.run_folder(run_id)
        for marker in report_store.MARKERS:
            report_store.pull_file(f"{folder.name}/{marker}")
        if not (folder / report_location.INDEX).is_file():
            entry = report_runs.run_entry(folder) if folder.is_dir() else None
            more = ""
            if entry is not None and entry.complete:
                more = (f"<p>Le résumé du run existe : <a href='{base(request)}/reports/{html.escape(folder.name)}/"
                        f"{report_runs.RUN_REPORT_FILE}'>rapport du run (Markdown)</a>.</p>")
            return _page("Pas de rapport qualité",
                         f"<h1>Pas de rapport qualité pour le passage {html.escape(run_id)}</h1>"
                         "<p>Ce passage n'a pas (encore) de rapport : il est en cours, ou il s'est arrêté avant le "
                         "contrôle qualité (voir les journaux de la tâche <code>quality_gate</code>), ou son "
                         "rapport a été supprimé par la rétention (Variable <code>cfa_opco_reports_keep_runs</code>)."
                         f"</p>{more}<p><a href='{base(request)}/'>← tous les passages</a></p>", status_code=404)
        return RedirectResponse(f"{base(request)}/reports/{folder.name}/{report_location.INDEX}")

    @app.get("/reports/{path:path}")
    def report_file(path: str):
        root = report_location.reports_root().resolve()
        target = (root / path).resolve()
        if root not in target.parents and target != root:
            raise HTTPException(404)
        if target.is_dir() or not target.suffix:
            target = target / report_location.INDEX
        target = report_store.pull_file(target.relative_to(root).as_posix(), root)
        if target is None or not target.is_file():
            raise HTTPException(404)
        media = "text/plain; charset=utf-8" if target.suffix == ".md" else None   # shown, not downloaded
        return FileResponse(target, media_type=media)

    return app


class CfaQualityReportsPlugin(AirflowPlugin):
    name = "cfa_quality_reports"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "CFA quality reports"}]
    external_views = [
        {"name": "Qualité des dossiers", "href": f"{URL_PREFIX}/", "destination": "nav",
         "category": "browse", "url_route": "cfa_quality"},
        {"name": "Rapport qualité", "href": f"{URL_PREFIX}/runs/{{RUN_ID}}", "destination": "dag_run",
         "url_route": "cfa_quality_run"},
    ]
