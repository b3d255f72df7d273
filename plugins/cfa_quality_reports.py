"""Airflow 3 UI plugin: the quality gate's reports, inside the Airflow UI.

- a FastAPI sub-application mounted at ``/cfa-quality`` (``fastapi_apps``) that serves the
  reports folder (settings.REPORTS_DIR, env CFA_REPORTS_DIR): ``/cfa-quality/`` lists the
  runs, ``/cfa-quality/runs/<run id>`` opens a run's report, ``/cfa-quality/reports/...``
  serves the files (HTML pages, Excel, CSV, Great Expectations Data Docs);
- two ``external_views``: a "Qualité des dossiers" entry in the navigation menu, and a
  "Rapport qualité" tab on every DAG run (``{RUN_ID}`` is filled in by the UI).

Every route requires an authenticated Airflow user (the UI's JWT cookie or a bearer
token): the reports carry (masked) personal data. Nothing heavy is imported at load time.
"""
import html
import re
from pathlib import Path

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

URL_PREFIX = "/cfa-quality"


def _reports_root() -> Path:
    from cfa_opco import settings

    return Path(settings.REPORTS_DIR)


def _safe_name(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.") or "run"


def create_app(authenticated: bool = True):
    deps = []
    if authenticated:
        from airflow.api_fastapi.core_api.security import requires_authenticated

        deps = [Depends(requires_authenticated())]

    app = FastAPI(title="CFA OPCO — rapports qualité", dependencies=deps)

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request):
        root = _reports_root()
        runs = []
        if root.exists():
            runs = sorted((p for p in root.iterdir() if (p / "index.html").exists()),
                          key=lambda p: (p / "index.html").stat().st_mtime, reverse=True)
        base = request.scope.get("root_path", "")
        items = "".join(f"<li><a href='{base}/reports/{html.escape(p.name)}/index.html'>{html.escape(p.name)}</a></li>"
                        for p in runs[:200]) or "<li>Aucun rapport pour l'instant.</li>"
        return ("<!doctype html><html lang='fr'><head><meta charset='utf-8'><title>Qualité des dossiers</title>"
                "<style>body{font-family:system-ui,sans-serif;margin:24px}</style></head><body>"
                f"<h1>Rapports qualité des dossiers d'apprentissage</h1><ul>{items}</ul></body></html>")

    @app.get("/runs/{run_id:path}")
    def run_report(run_id: str, request: Request):
        name = _safe_name(run_id)
        if not (_reports_root() / name / "index.html").exists():
            raise HTTPException(404, f"pas de rapport qualité pour le passage {run_id}")
        return RedirectResponse(f"{request.scope.get('root_path', '')}/reports/{name}/index.html")

    @app.get("/reports/{path:path}")
    def report_file(path: str):
        root = _reports_root().resolve()
        target = (root / path).resolve()
        if root not in target.parents and target != root:
            raise HTTPException(404)
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            raise HTTPException(404)
        return FileResponse(target)

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
