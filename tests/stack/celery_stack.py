"""The Celery stack of the tests (issue 13): ``python -m cfa_opco.stack.celery_stack`` run with
its own ports, databases (``cfa_celery_test_*`` on the system PostgreSQL), Redis database and
var/ folder, driven the way an operator would: the stack's command line (start, replay, kill,
restart, stop) and Airflow's REST API. The test process keeps its own settings (the embedded
PostgreSQL of the other tests): everything about the stack goes through subprocesses, HTTP and
DSNs named here."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from cfa_opco import report_location, report_runs
from cfa_opco.opcos import opco_codes
from cfa_opco.stack.celery_stack import CeleryStack

PROJECT = Path(__file__).resolve().parents[2]
ENABLE = "CFA_CELERY_STACK"
PG_HOST = os.environ.get("CELERY_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CELERY_PG_PORT", "5432"))
REDIS = ("127.0.0.1", 6379)
REDIS_DB = int(os.environ.get("CELERY_TEST_REDIS_DB", "7"))   # not the one of `make up-celery` (0)
DB_PREFIX = "cfa_celery_test_"
SEED, DOSSIERS = 42, 400
CONF = {"decision_deadline_minutes": 10}
# the zombie of a killed worker found in seconds, not minutes; triggers of a dead triggerer taken
# over quickly; tasks queued to a dead worker requeued
FAST_RECOVERY = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "90",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
    "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
}


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False


def skip_reason() -> str | None:
    """Why the Celery stack tests cannot run here, or None."""
    if os.environ.get(ENABLE) != "1":
        return f"the Celery stack tests run with {ENABLE}=1 (make test-celery): they start a whole Airflow"
    missing = [f"{what} on {h}:{p}" for what, h, p in (("PostgreSQL", PG_HOST, PG_PORT), ("Redis", *REDIS))
               if not answers(h, p)]
    return f"no {' and no '.join(missing)} (the Celery stack needs them)" if missing else None


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports."""
    for base in range(18100, 19000, 10):
        if all(not answers("127.0.0.1", base + i) for i in range(count)):
            return base
    raise RuntimeError("no free ports for the Celery stack")


@dataclass
class TestStack:
    var_dir: Path
    env: dict
    stack: CeleryStack

    # ---- the stack's command line ------------------------------------------------------
    def cli(self, *args: str, timeout: float = 600) -> str:
        out = subprocess.run([sys.executable, "-m", "cfa_opco.stack.celery_stack", *args], env=self.env,
                             cwd=PROJECT, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"celery_stack {' '.join(args)} failed ({out.returncode}):\n"
                               f"{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        return out.stdout

    def replay(self, run_id: str) -> str:
        self.cli("replay", "--seed", str(SEED), "--dossiers", str(DOSSIERS), "--conf", json.dumps(CONF),
                 "--run-id", run_id)
        return run_id

    def kill(self, component: str) -> None:
        self.cli("kill", component)

    def restart(self, component: str) -> None:
        self.cli("restart", component)

    # ---- what the run left ---------------------------------------------------------------
    def sandbox(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.stack.sandbox_url}/_sandbox", timeout=30, trust_env=False)

    def duplicates(self) -> dict[str, list]:
        with self.sandbox() as sbx:
            found = {code: sbx.get("/creations", params={"opco": code}).json()["duplicates"] for code in opco_codes()}
        return {code: d for code, d in found.items() if d}

    def creations(self) -> int:
        with self.sandbox() as sbx:
            return sum(sbx.get("/creations", params={"opco": code}).json()["total"] for code in opco_codes())

    def summary(self, run_id: str) -> dict:
        folder = report_location.run_folder(run_id, self.var_dir / "reports-store")
        return json.loads((folder / report_runs.SUMMARY_FILE).read_text())

    @property
    def connector(self) -> str:
        return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{DB_PREFIX}cfa_connector"

    def task_instances(self, run_id: str, task_suffix: str = "") -> list[dict]:
        return [t for t in self.stack.task_instances(run_id) if t["task_id"].endswith(task_suffix)]

    def worker_of(self, run_id: str, ti: dict) -> str | None:
        """The worker that runs (ran) a task instance: the one whose own var/ holds its log."""
        task = f"task_id={ti['task_id']}" + (f"/map_index={ti['map_index']}" if ti.get("map_index", -1) >= 0 else "")
        for name in self.stack.worker_names():
            folder = self.var_dir / name / "airflow" / "logs" / "dag_id=cfa_opco_daily" / f"run_id={run_id}" / task
            if (folder / f"attempt={ti['try_number']}.log").exists():
                return name
        return None

    def end_run(self, run_id: str) -> None:
        """A run a failed test left going is marked failed: the next test's run is not held by
        max_active_runs=1."""
        if self.stack.run_state(run_id) not in ("success", "failed"):
            with self.stack.api() as client:
                client.patch(f"/dags/cfa_opco_daily/dagRuns/{quote(run_id, safe='')}", json={"state": "failed"})

    def wait_for(self, what: str, condition, timeout: float = 600, every: float = 0.5):
        """Poll ``condition()`` until it returns something true; that value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := condition():
                return value
            time.sleep(every)
        raise TimeoutError(f"not seen within {timeout:.0f} s: {what}")


def start(fault_preset: str = "heavy") -> TestStack:
    """A fresh stack: its var/ removed, its databases recreated, its Redis database emptied."""
    var_dir = PROJECT / "var" / "test-celery"
    shutil.rmtree(var_dir, ignore_errors=True)
    base = _free_ports(6)
    env = {**os.environ, "CFA_PG_HOST": PG_HOST, "CFA_PG_PORT": str(PG_PORT), "CFA_DB_PREFIX": DB_PREFIX,
           "CFA_VAR_DIR": str(var_dir), "CFA_CELERY_API_PORT": str(base), "CFA_CELERY_SANDBOX_PORT": str(base + 1),
           "CFA_CELERY_LOG_PORT": str(base + 2), "CFA_CELERY_BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/{REDIS_DB}",
           "CFA_CELERY_RESULT_BACKEND": f"db+postgresql://postgres@{PG_HOST}:{PG_PORT}/{DB_PREFIX}airflow",
           "CFA_CELERY_WORKERS": "2", "CFA_CELERY_CONCURRENCY": "4", "CFA_CELERY_FAULT_PRESET": fault_preset,
           "CFA_CELERY_EXTRA_ENV": json.dumps(FAST_RECOVERY)}
    for key in [k for k in env if k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "CFA_ERP_FILES"))
                or k in ("AIRFLOW_HOME",)]:
        env.pop(key)   # the test process's own Airflow (the embedded one) stays out of the stack
    import redis  # lazy: the Celery requirements are only installed for these tests

    redis.Redis(*REDIS, db=REDIS_DB).flushdb()
    import psycopg2  # lazy: only to drop the previous stack's databases

    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        for name in ("airflow", "cfa_connector", "cfa_erp_main", "cfa_erp_est"):
            cur.execute(f'DROP DATABASE IF EXISTS "{DB_PREFIX}{name}" WITH (FORCE)')
    admin.close()
    stack = CeleryStack.from_env(env)
    ts = TestStack(var_dir, env, stack)
    try:
        ts.cli("start", timeout=600)
    except BaseException:
        stop(ts)
        raise
    return ts


def stop(ts: TestStack) -> None:
    ts.cli("stop", timeout=600)
