"""``make up-celery`` / ``make down-celery`` / ``make replay-celery``: Airflow with the
CeleryExecutor on the machine's PostgreSQL and a broker (Redis by default, or RabbitMQ), each
Airflow component a process of its own, as on several machines:

    api-server, scheduler, dag-processor, triggerer     the "control" machine (var/celery)
    worker1 .. workerN (airflow celery worker)          each with its own CFA_VAR_DIR and
                                                        AIRFLOW_HOME (var/celery/workerN):
                                                        no local disk shared between tasks
    sandbox                                             the OPCO sandbox (optionally faulty)

The metadata, connector and ERP databases are created on the PostgreSQL named by
CFA_PG_HOST/CFA_PG_PORT (the machine's PostgreSQL 15, trust auth), named with CFA_DB_PREFIX
(``cfa_celery_``). Reports go through an object-store URL (Variable cfa_opco_reports_dir,
``file://…/var/celery/reports-store`` here; ``s3://…`` in production), the ERP documents are
read from CFA_ERP_FILES_DIR (the ERPs' files), everything else through the databases.

Settings (environment, the Makefile's CELERY_* variables set them):

    CFA_CELERY_API_PORT (8090)  CFA_CELERY_SANDBOX_PORT (8095)  CFA_CELERY_LOG_PORT (8796: the
    triggerer's log server, the workers' on the next ports)  CFA_CELERY_BROKER_URL
    (redis://127.0.0.1:6379/0; amqp://guest:guest@127.0.0.1:5672// for RabbitMQ)
    CFA_CELERY_RESULT_BACKEND (db+postgresql on the metadata database)  CFA_CELERY_WORKERS (2)
    CFA_CELERY_CONCURRENCY (4)  CFA_CELERY_FAULT_PRESET (off|light|heavy)
    CFA_CELERY_EXTRA_ENV (a JSON object of environment variables for every component, e.g.
    shorter heartbeat timeouts)

Every process runs in its own process group; ``stop`` signals whole groups (SIGTERM, then
SIGKILL); SIGINT during ``start`` stops what was started.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

import httpx

from cfa_opco import report_location, settings
from cfa_opco.stack import airflow_env, airflow_settings, embedded_pg, processes

DAG_ID = "cfa_opco_daily"
CONTROL = ("api-server", "scheduler", "dag-processor", "triggerer")
# the demo's sandbox settings (cfa_opco.demo): delays, rate limit
SANDBOX_RATE_LIMIT = 95.0
SANDBOX_OVERRIDES = {"delays": {"instruction": 1, "decision": 2, "reglement": 2},
                     "rate_limit": {"per_second": SANDBOX_RATE_LIMIT / 0.95}}


@dataclass(frozen=True)
class CeleryStack:
    var_dir: Path = settings.VAR_DIR
    api_port: int = 8090
    sandbox_port: int = 8095
    log_port: int = 8796
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str = ""
    workers: int = 2
    concurrency: int = 4
    fault_preset: str = ""
    extra_env: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "CeleryStack":
        e = os.environ if environ is None else environ
        return cls(var_dir=Path(e.get("CFA_VAR_DIR") or settings.VAR_DIR),
                   api_port=int(e.get("CFA_CELERY_API_PORT") or 8090),
                   sandbox_port=int(e.get("CFA_CELERY_SANDBOX_PORT") or 8095),
                   log_port=int(e.get("CFA_CELERY_LOG_PORT") or 8796),
                   broker_url=e.get("CFA_CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0",
                   result_backend=e.get("CFA_CELERY_RESULT_BACKEND") or "",
                   workers=int(e.get("CFA_CELERY_WORKERS") or 2),
                   concurrency=int(e.get("CFA_CELERY_CONCURRENCY") or 4),
                   fault_preset=e.get("CFA_CELERY_FAULT_PRESET") or "",
                   extra_env=json.loads(e.get("CFA_CELERY_EXTRA_ENV") or "{}"))

    # ---- where things are ------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @property
    def home(self) -> Path:
        return self.var_dir / "airflow"

    @property
    def reports_store(self) -> str:
        """The reports' object store: a file:// URL here (one machine), s3:// in production."""
        return (self.var_dir / "reports-store").resolve().as_uri()

    @property
    def erp_files(self) -> Path:
        return Path(os.environ.get("CFA_ERP_FILES_DIR") or self.var_dir / "erp_files")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def worker_names(self) -> list[str]:
        return [f"worker{i}" for i in range(1, self.workers + 1)]

    def names(self) -> list[str]:
        return ["sandbox", *CONTROL, *self.worker_names()]

    # ---- environment -----------------------------------------------------------------
    def _secret(self, name: str, make) -> str:
        """A secret made once per stack (metadata encryption, API tokens), kept in var/ (0600),
        shared by every component through its environment, never printed."""
        path = self.home / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(make())
            path.chmod(0o600)
        return path.read_text().strip()

    def env(self, component: str) -> dict[str, str]:
        """The environment of one component: the control machine's var/ or a worker's own."""
        var = self.var_dir / component if component.startswith("worker") else self.var_dir
        home = var / "airflow"
        env = {**os.environ, **airflow_env.airflow_env(home)}
        env.update({
            "CFA_VAR_DIR": str(var),
            "CFA_ERP_FILES_DIR": str(self.erp_files),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__FERNET_KEY": airflow_env.fernet_key(self.home),
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt.secret", lambda: secrets.token_urlsafe(48)),
            "AIRFLOW__API__SECRET_KEY": self._secret("api.secret", lambda: secrets.token_urlsafe(32)),
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": self.result_backend or "db+" + settings.dsn("airflow"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.log_port),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        })
        if component.startswith("worker"):
            env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(self.log_port + int(component[6:]))
        env.update({k: str(v) for k, v in self.extra_env.items()})
        return env

    def commands(self) -> dict[str, list[str]]:
        airflow = str(airflow_env.airflow_bin())
        cmds = {
            "sandbox": [sys.executable, "-m", "cfa_opco.sandbox", "--host", "127.0.0.1",
                        "--port", str(self.sandbox_port), "--db", str(self.var_dir / "sandbox" / "sandbox.sqlite"),
                        "--override", json.dumps(SANDBOX_OVERRIDES)]
                       + (["--fault-preset", self.fault_preset] if self.fault_preset else []),
            "api-server": [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.api_port),
                           "--workers", "1"],
            "scheduler": [airflow, "scheduler"],
            "dag-processor": [airflow, "dag-processor"],
            "triggerer": [airflow, "triggerer"],
        }
        for name in self.worker_names():
            cmds[name] = [airflow, "celery", "worker", "--celery-hostname", f"{name}@%h",
                          "--concurrency", str(self.concurrency)]
        return cmds

    # ---- lifecycle -------------------------------------------------------------------
    def init(self) -> None:
        """Create the databases (if missing) on the configured PostgreSQL, migrate Airflow's,
        apply airflow_settings.yaml (OPCO connections on this stack's sandbox, postgres ones on
        this server) and the stack's Variables."""
        embedded_pg.create_databases()
        from cfa_opco.connector import migrate  # lazy: the connector's migrations, only at init

        migrate(settings.dsn("connector"))
        env = self.env("api-server")
        subprocess.run([str(airflow_env.airflow_bin()), "db", "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        loaded = airflow_settings.load(settings.PROJECT_DIR / "airflow_settings.yaml")
        airflow_settings.rewrite_sandbox_port(loaded, self.sandbox_port, SANDBOX_RATE_LIMIT)
        airflow_settings.rewrite_postgres(loaded)
        loaded.variables.append({"variable_name": report_location.REPORTS_VARIABLE,
                                 "variable_value": self.reports_store})
        # apply in a process with this stack's Airflow configuration (Airflow reads it at import)
        subprocess.run([sys.executable, "-c", "import sys, json; from cfa_opco.stack import airflow_settings as s; "
                        "print(s.apply_to_metadata_db(s.AirflowSettings(**json.load(sys.stdin))))"],
                       input=json.dumps({"connections": loaded.connections, "pools": loaded.pools,
                                         "variables": loaded.variables}),
                       env=env, check=True, text=True, stdout=subprocess.DEVNULL)
        print(f"[celery] databases {', '.join(settings.DATABASES.values())} on "
              f"{settings.PG_HOST}:{settings.PG_PORT}; reports store {self.reports_store}")

    def start(self) -> None:
        interrupted = False

        def on_sigint(signum, frame):   # SIGINT while starting: stop what was started, cleanly
            nonlocal interrupted
            interrupted = True
            raise KeyboardInterrupt
        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            self.init()
            (self.var_dir / "sandbox").mkdir(parents=True, exist_ok=True)
            for name, cmd in self.commands().items():
                processes.spawn(self.run_dir, name, cmd, self.env(name), settings.PROJECT_DIR)
            self.wait_healthy()
        except KeyboardInterrupt:
            print("[celery] interrupted: stopping what was started")
            self.stop()
            raise SystemExit(130)
        finally:
            signal.signal(signal.SIGINT, previous)
        print(f"Airflow UI: {self.api_url} (user admin, password in {self.home / 'passwords.json'}); "
              f"sandbox {self.sandbox_url}; broker {_safe_url(self.broker_url)}")

    def stop(self) -> None:
        """Workers first (their tasks end), then the control processes, then the sandbox."""
        for name in [*self.worker_names(), *reversed(CONTROL), "sandbox"]:
            processes.stop(self.run_dir, name, signal.SIGTERM, timeout=30)

    def status(self) -> dict[str, int | None]:
        return {name: processes.pid(self.run_dir, name) for name in self.names()}

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Signal a component's whole process group (a crash when SIGKILL)."""
        return processes.signal_group(self.run_dir, name, sig)

    def restart(self, name: str, sig: int = signal.SIGTERM) -> int:
        processes.stop(self.run_dir, name, sig, timeout=30)
        return processes.spawn(self.run_dir, name, self.commands()[name], self.env(name), settings.PROJECT_DIR)

    def wait_healthy(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        for url in (f"{self.sandbox_url}/_sandbox/health", f"{self.api_url}/api/v2/monitor/health"):
            while True:
                dead = [n for n, p in self.status().items() if p is None]
                if dead:
                    raise SystemExit(f"stopped: {', '.join(dead)} (logs in {self.run_dir})")
                try:
                    if httpx.get(url, timeout=5, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"not answering after {timeout:.0f} s: {url} (logs in {self.run_dir})")
                time.sleep(1)

    # ---- the REST API ----------------------------------------------------------------
    def api(self) -> httpx.Client:
        """A client of the stack's REST API, with a token of the admin user."""
        password = json.loads((self.home / "passwords.json").read_text())["admin"]
        r = httpx.post(f"{self.api_url}/auth/token", json={"username": "admin", "password": password},
                       timeout=30, trust_env=False)
        r.raise_for_status()
        return httpx.Client(base_url=f"{self.api_url}/api/v2", timeout=60, trust_env=False,
                            headers={"Authorization": f"Bearer {r.json()['access_token']}"})

    def trigger(self, conf: dict | None = None, run_id: str | None = None, timeout: float = 300.0) -> str:
        """Unpause and trigger the daily DAG once the DAG processor has parsed it; the run id."""
        run_id = run_id or f"celery__{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')}+00:00"
        deadline = time.monotonic() + timeout
        with self.api() as client:
            while client.get(f"/dags/{DAG_ID}").status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the DAG {DAG_ID} is not known after {timeout:.0f} s (see "
                                     f"{self.run_dir / 'dag-processor.log'})")
                time.sleep(2)
            # Unpausing makes the scheduler start the latest missed 06:00 run (catchup=False):
            # a paused DAG's run is triggered at that very time instead, so that it is the only one
            dag = client.get(f"/dags/{DAG_ID}").json()
            logical = dag.get("next_dagrun_logical_date") if dag.get("is_paused") else None
            if logical and dt.datetime.fromisoformat(logical.replace("Z", "+00:00")) > dt.datetime.now(dt.timezone.utc):
                logical = None
            client.post(f"/dags/{DAG_ID}/dagRuns", json={"dag_run_id": run_id, "logical_date": logical,
                                                          "conf": conf or {}}).raise_for_status()
            client.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
        return run_id

    def run_state(self, run_id: str) -> str:
        with self.api() as client:
            r = client.get(f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")
            r.raise_for_status()
            return r.json()["state"]

    def task_instances(self, run_id: str) -> list[dict]:
        with self.api() as client:
            r = client.get(f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances",
                           params={"limit": 1000})
            r.raise_for_status()
            return r.json()["task_instances"]

    def wait_run(self, run_id: str, timeout: float = 1800.0) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.run_state(run_id)) not in ("success", "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {state} after {timeout:.0f} s")
            time.sleep(3)
        return state

    def replay(self, seed_value: int, dossiers: int, conf: dict | None = None, run_id: str | None = None) -> str:
        """Reseed the ERPs, reset the connector's database and the sandbox, trigger one run."""
        from cfa_opco.connector import migrate  # lazy: only when resetting
        from cfa_opco.erp.generator import seed  # lazy: the generator is only for replays

        for name in ("erp_main", "erp_est", "connector"):
            embedded_pg.recreate_database(settings.DATABASES[name])
        migrate(settings.dsn("connector"))
        seed(seed_value, dossiers, files_root=self.erp_files)
        httpx.post(f"{self.sandbox_url}/_sandbox/reset", json={"keep_settings": True}, timeout=30,
                   trust_env=False).raise_for_status()
        run_id = self.trigger(conf, run_id)
        print(f"[celery] ERPs reseeded ({dossiers} dossiers, seed {seed_value}), sandbox reset; run {run_id}: "
              f"{self.api_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
        return run_id


def _safe_url(url: str) -> str:
    """A broker URL without its password (logs, messages)."""
    u = urlparse(url)
    if u.password:
        return url.replace(f":{u.password}@", ":***@", 1)
    return url


def services_answer(broker_url: str, timeout: float = 3.0) -> list[str]:
    """What is missing among the system PostgreSQL and the broker ([] when both answer)."""
    import socket  # lazy: only this check opens raw sockets

    missing = []
    b = urlparse(broker_url)
    for what, host, port in (("PostgreSQL", settings.PG_HOST, settings.PG_PORT),
                             (b.scheme, b.hostname or "127.0.0.1", b.port or (6379 if b.scheme == "redis" else 5672))):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError:
            missing.append(f"{what} on {host}:{port}")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfa_opco.stack.celery_stack")
    parser.add_argument("action", choices=["start", "stop", "status", "check", "replay", "kill", "restart"])
    parser.add_argument("component", nargs="?", help="kill/restart: sandbox, api-server, scheduler, "
                                                      "dag-processor, triggerer, worker1...")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dossiers", type=int, default=2000)
    parser.add_argument("--conf", default="{}", help="the run's conf (JSON), for replay")
    parser.add_argument("--run-id", default=None, help="the run's id, for replay")
    args = parser.parse_args(argv)
    stack = CeleryStack.from_env()
    if args.action == "check":
        missing = services_answer(stack.broker_url)
        print("services: " + ("PostgreSQL and broker answer" if not missing else "missing " + ", ".join(missing)))
        return 1 if missing else 0
    if args.action == "start":
        if missing := services_answer(stack.broker_url):
            raise SystemExit(f"cannot start the Celery stack: no {', '.join(missing)}")
        stack.start()
    elif args.action == "stop":
        stack.stop()
    elif args.action == "status":
        for name, pid in stack.status().items():
            print(f"{name:<14} {'running (pid %s)' % pid if pid else 'stopped'}")
    elif args.action in ("kill", "restart"):
        if args.component not in stack.names():
            parser.error(f"{args.action} what? one of {', '.join(stack.names())}")
        if args.action == "kill":   # a crash of the whole process group
            print(f"{args.component} killed (pid {stack.kill(args.component)})")
        else:
            stack.restart(args.component)
    else:
        stack.replay(args.seed, args.dossiers, json.loads(args.conf), args.run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
