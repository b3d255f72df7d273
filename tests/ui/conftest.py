"""The browser tests' stack: one real daily DAG run, the real Airflow API server (UI) over
the test metadata database with the project's plugins, and a headless system Chromium
driven by Playwright.

Fixtures (used by every tests/ui module; keep their names and attributes):

- ``ui_stack`` (session): runs the daily DAG once (``dag.test()``, tests/daily_run.py) on a
  small seeded ERP against the real sandbox and the test PostgreSQL, with the Variable
  ``cfa_opco_reports_dir`` set in the metadata database to a test folder; then starts
  ``airflow api-server`` on a free port (simple auth manager, every user admin: no login)
  and yields a :class:`UiStack` (``.base_url``, ``.run_id``, ``.dag_id``, ``.connector``,
  ``.reports_root``, ...). The server is stopped at the end (its process group: no orphan).
- ``page``: a Playwright page (sync API) of a headless /usr/bin/chromium, on a fresh context.
- ``shoot(page, name)``: saves a full-page screenshot to var/test/screenshots/<name>.png, or
  to $CFA_UI_SCREENSHOTS_DIR (``make screenshots``: docs/screenshots/).

Skipped, with the reason, when Chromium is not installed (``make browser``).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cfa_opco import settings
from tests.conftest import make_database

CHROMIUM = os.environ.get("CFA_CHROMIUM", "/usr/bin/chromium")
UI_DOSSIERS, UI_SEED = 300, 42
SERVER_START_TIMEOUT = 180.0


@dataclass
class UiStack:
    base_url: str            # the Airflow UI / API server, e.g. http://127.0.0.1:40123
    run_id: str              # the daily DAG run made for the tests
    dag_id: str
    connector: str           # DSN of the connector database the run wrote (ledger, verdicts, proofs)
    reports_root: Path       # the Variable cfa_opco_reports_dir's folder
    dag_run_state: str = ""  # "failed" when the run left dossiers blocked (attention_needed)
    task_states: dict = field(default_factory=dict)
    erp: dict = field(default_factory=dict)   # {"erp_main": dsn, "erp_est": dsn, "files_root": Path}
    server_log: Path | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"airflow api-server exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"airflow api-server not ready after {timeout:.0f} s; see {log}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (uvicorn and its workers), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def _set_variable(key: str, value: str) -> None:
    from cfa_opco.stack import airflow_env

    airflow_env.run_airflow(["variables", "set", key, value], quiet=True)


@pytest.fixture(scope="session")
def ui_stack(pg_server, airflow_db, tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run `make browser` (apt-get install chromium chromium-driver)")
    from cfa_opco.connector import migrate
    from cfa_opco.erp.generator import seed
    from cfa_opco.sandbox.testing import run_sandbox
    from tests.daily_run import DAG_ID, daily_env, run_daily, state_name, task_states

    work = tmp_path_factory.mktemp("ui_stack")
    erp = {"erp_main": make_database("test_ui_erp_main"), "erp_est": make_database("test_ui_erp_est"),
           "files_root": work / "erp_files"}
    seed(UI_SEED, UI_DOSSIERS, main_dsn=erp["erp_main"], est_dsn=erp["erp_est"], files_root=erp["files_root"])
    connector = make_database("test_ui_connector")
    migrate(connector)
    reports_root = work / "reports"
    # the reports root as an operator sets it: a Variable in the metadata database, read by
    # the tasks and by the API server's plugin alike (no AIRFLOW_VAR_* for it anywhere)
    _set_variable("cfa_opco_reports_dir", str(reports_root))

    with pytest.MonkeyPatch.context() as mp, run_sandbox(instant=True, rate_limit=0) as sbx:
        for key, value in daily_env(sbx.port, erp, connector, work).items():
            mp.setenv(key, value)
        mp.delenv("AIRFLOW_VAR_CFA_OPCO_REPORTS_DIR", raising=False)
        dag_run = run_daily({"decision_deadline_minutes": 1})
        states = task_states(dag_run)
        # what the follow-up DAG's check_keys does on its schedule: every key's expiry read
        from cfa_opco.followup import key_warnings

        key_warnings(connector, 30)

    port = _free_port()
    log = settings.VAR_DIR / "ui" / f"api-server-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_VAR_", "AIRFLOW_CONN_"))}
    env.update({
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.PROJECT_DIR / "plugins"),
    })
    from cfa_opco.stack import airflow_env

    with open(log, "ab") as out:
        proc = subprocess.Popen([str(airflow_env.airflow_bin()), "api-server", "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=settings.PROJECT_DIR)
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base_url}/api/v2/monitor/health", proc, log, SERVER_START_TIMEOUT)
        yield UiStack(base_url=base_url, run_id=dag_run.run_id, dag_id=DAG_ID, connector=connector,
                      reports_root=reports_root, dag_run_state=state_name(dag_run.state), task_states=states,
                      erp=erp, server_log=log)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def _browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: run `make browser`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture()
def page(_browser):
    context = _browser.new_context(viewport={"width": 1400, "height": 900}, locale="fr-FR")
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def screenshots_dir() -> Path:
    return Path(os.environ.get("CFA_UI_SCREENSHOTS_DIR") or settings.VAR_DIR / "screenshots")


def _shoot(page, name: str) -> Path:
    folder = screenshots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture()
def shoot():
    """shoot(page, name) -> Path of the saved screenshot."""
    return _shoot
