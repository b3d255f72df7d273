"""``make up`` / ``make down``: a long-running local stack (embedded PostgreSQL, the OPCO
sandbox, Airflow standalone with its UI on http://localhost:8080); ``make replay``: the
demo again, under the stack's scheduler.

The stack's sandbox is the demo's (same database file, delays and rate limit: see
cfa_opco.demo), and the connections point at it as ``make demo``'s do.

Processes run in the background with their pid and log in var/run/; ``stop`` ends them
(Airflow standalone with SIGINT: it only stops its children cleanly on SIGINT).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import quote

import httpx

from cfa_opco import report_location, settings
from cfa_opco.stack import airflow_env, celery_stack, embedded_pg, processes

RUN_DIR = settings.VAR_DIR / "run"
DAG_ID = "cfa_opco_daily"


def ui_url() -> str:
    """The stack's Airflow UI (port: AIRFLOW__API__PORT, default 8080)."""
    return f"http://localhost:{os.environ.get('AIRFLOW__API__PORT', '8080')}"


def _pid(name: str) -> int | None:
    return processes.pid(RUN_DIR, name)


def _spawn(name: str, cmd: list[str], env: dict | None = None) -> int:
    return processes.spawn(RUN_DIR, name, cmd, env or os.environ.copy(), settings.PROJECT_DIR)


def _stop(name: str, sig: int, timeout: float = 30.0) -> None:
    processes.stop(RUN_DIR, name, sig, timeout)


def start(sandbox_port: int) -> None:
    from cfa_opco import demo  # lazy: demo imports the whole stack; only replay needs it

    embedded_pg.start()
    airflow_env.init(sandbox_port=sandbox_port, sandbox_rate_limit=demo.DEMO_RATE_LIMIT)
    demo.SANDBOX_DB.parent.mkdir(parents=True, exist_ok=True)
    _spawn("sandbox", [sys.executable, "-m", "cfa_opco.sandbox", "--port", str(sandbox_port),
                       "--db", str(demo.SANDBOX_DB), "--override", json.dumps(demo.SANDBOX_OVERRIDES)])
    (RUN_DIR / "sandbox.port").write_text(str(sandbox_port))
    env = {**os.environ, **airflow_env.airflow_env()}
    # the tasks reach the API server's execution API on the UI's port (AIRFLOW__API__PORT)
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"{ui_url()}/execution/")
    _spawn("airflow", [str(airflow_env.airflow_bin()), "standalone"], env=env)
    print(f"Airflow UI: {ui_url()} (the admin password is in var/airflow/"
          "simple_auth_manager_passwords.json.generated once it has started)")


def _wait_healthy(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"not answering after {timeout:.0f} s: {url}")


def _airflow_json(args: list[str], env: dict) -> list | dict:
    """The JSON an ``airflow ... -o json`` command prints (its log lines go around it)."""
    out = subprocess.run([str(airflow_env.airflow_bin()), *args, "-o", "json"], env=env, check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith(("[{", "[]", "{")):
            return json.loads(line)
    raise SystemExit(f"no JSON from airflow {' '.join(args)}: {out[-500:]}")


def _runs(env: dict) -> dict[str, str]:
    return {r["run_id"]: r["state"] for r in _airflow_json(["dags", "list-runs", DAG_ID], env)}


def replay(seed_value: int, dossiers: int, sandbox_port: int) -> str:
    """The demo again, under the running stack's scheduler: reseed the demo ERPs, reset the
    connector's database and the sandbox's state, then have one cfa_opco_daily run. A paused
    DAG is unpaused: when the scheduler then starts the run of the latest 06:00 on its own,
    that run is the replay; otherwise one run is triggered. Returns the run id."""
    from cfa_opco import demo  # lazy: demo imports the whole stack; only replay needs it

    if _pid("airflow") is None or _pid("sandbox") is None:
        raise SystemExit("the stack is not running: `make up` first (then `make replay`)")
    port = int((RUN_DIR / "sandbox.port").read_text()) if (RUN_DIR / "sandbox.port").exists() else sandbox_port
    sandbox = f"http://127.0.0.1:{port}"
    _wait_healthy(f"{sandbox}/_sandbox/health")
    _wait_healthy(f"{ui_url()}/api/v2/monitor/health", timeout=300)
    env = {**os.environ, **airflow_env.airflow_env()}
    # the scheduler must know the DAG (the dag processor parses it within a minute of `make up`)
    deadline = time.monotonic() + 300
    while subprocess.run([str(airflow_env.airflow_bin()), "dags", "details", DAG_ID], env=env,
                         capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"the DAG {DAG_ID} is not known to Airflow yet; see {RUN_DIR / 'airflow.log'}")
        time.sleep(5)
    before = _runs(env)
    active = sorted(r for r, st in before.items() if st in ("queued", "running"))
    if active:
        raise SystemExit(f"a {DAG_ID} run is still going ({', '.join(active)}): wait for it, or mark it "
                         "failed in the UI, before resetting its databases")
    demo.reset_data(seed_value, dossiers)
    httpx.post(f"{sandbox}/_sandbox/reset", json={"keep_settings": False}, timeout=30,
               trust_env=False).raise_for_status()
    print(f"[replay] sandbox {sandbox} reset (no dossier, the demo's settings)")
    run_id = None
    details = _airflow_json(["dags", "details", DAG_ID], env)
    details = details[0] if isinstance(details, list) else details
    if details.get("is_paused"):
        subprocess.run([str(airflow_env.airflow_bin()), "dags", "unpause", DAG_ID], env=env, check=True,
                       capture_output=True)
        print(f"[replay] {DAG_ID} unpaused (it now also runs on its schedule, 06:00 Monday to Saturday)")
        deadline = time.monotonic() + 60
        while run_id is None and time.monotonic() < deadline:
            time.sleep(5)
            run_id = next((r for r in _runs(env) if r not in before), None)
    if run_id is None:
        run_id = f"replay__{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S')}+00:00"
        subprocess.run([str(airflow_env.airflow_bin()), "dags", "trigger", DAG_ID, "--run-id", run_id], env=env,
                       check=True, capture_output=True)
        print(f"[replay] {DAG_ID} triggered: run {run_id}")
    else:
        print(f"[replay] the scheduler started the run {run_id} (the latest scheduled time): it is the replay")
    print(f"  watch it: {ui_url()}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}\n"
          f"  its report (once the quality gate ran): {ui_url()}{report_location.run_report_url(run_id)}\n"
          "  the run ends failed on attention_needed, as the demo's: its ERPs hold dossiers that cannot be sent")
    return run_id


def stop() -> None:
    _stop("airflow", signal.SIGINT)
    _stop("sandbox", signal.SIGTERM)
    embedded_pg.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfa_opco.stack.up")
    parser.add_argument("action", choices=["start", "stop", "replay"])
    parser.add_argument("--sandbox-port", type=int, default=8085)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dossiers", type=int, default=2000)
    parser.add_argument("--executor", choices=["local", "celery"], default="local",
                        help="celery: the CeleryExecutor stack on the system PostgreSQL (cfa_opco.stack.celery_stack)")
    args = parser.parse_args(argv)
    if args.executor == "celery":
        return celery_stack.main([{"start": "start", "stop": "stop", "replay": "replay"}[args.action],
                                  "--seed", str(args.seed), "--dossiers", str(args.dossiers)])
    if args.action == "replay":
        replay(args.seed, args.dossiers, args.sandbox_port)
    else:
        start(args.sandbox_port) if args.action == "start" else stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
