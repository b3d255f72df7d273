"""``make up`` / ``make down``: a long-running local stack (embedded PostgreSQL, the OPCO
sandbox, Airflow standalone with its UI on http://localhost:8080).

Processes run in the background with their pid and log in var/run/; ``stop`` ends them
(Airflow standalone with SIGINT: it only stops its children cleanly on SIGINT).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from cfa_opco import settings
from cfa_opco.stack import airflow_env, embedded_pg

RUN_DIR = settings.VAR_DIR / "run"


def _pid(name: str) -> int | None:
    path = RUN_DIR / f"{name}.pid"
    if not path.exists():
        return None
    pid = int(path.read_text().strip() or 0)
    try:
        os.kill(pid, 0)
        return pid
    except OSError:
        path.unlink(missing_ok=True)
        return None


def _spawn(name: str, cmd: list[str], env: dict | None = None) -> int:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if (pid := _pid(name)) is not None:
        print(f"{name} already running (pid {pid})")
        return pid
    log = open(RUN_DIR / f"{name}.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env or os.environ.copy(),
                            start_new_session=True, cwd=settings.PROJECT_DIR)
    (RUN_DIR / f"{name}.pid").write_text(str(proc.pid))
    print(f"{name} started (pid {proc.pid}, log {RUN_DIR / f'{name}.log'})")
    return proc.pid


def _stop(name: str, sig: int, timeout: float = 30.0) -> None:
    pid = _pid(name)
    if pid is None:
        return
    os.killpg(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(name) is not None:
        time.sleep(0.3)
    if _pid(name) is not None:
        os.killpg(pid, signal.SIGKILL)
    (RUN_DIR / f"{name}.pid").unlink(missing_ok=True)
    print(f"{name} stopped")


def start(sandbox_port: int) -> None:
    embedded_pg.start()
    airflow_env.init(sandbox_port=sandbox_port)
    (settings.VAR_DIR / "sandbox").mkdir(parents=True, exist_ok=True)
    _spawn("sandbox", [sys.executable, "-m", "cfa_opco.sandbox", "--port", str(sandbox_port),
                       "--db", str(settings.VAR_DIR / "sandbox" / "stack.sqlite")])
    _spawn("airflow", [str(airflow_env.airflow_bin()), "standalone"], env={**os.environ, **airflow_env.airflow_env()})
    print("Airflow UI: http://localhost:8080 (the admin password is in var/airflow/"
          "simple_auth_manager_passwords.json.generated once it has started)")


def stop() -> None:
    _stop("airflow", signal.SIGINT)
    _stop("sandbox", signal.SIGTERM)
    embedded_pg.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfa_opco.stack.up")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--sandbox-port", type=int, default=8085)
    args = parser.parse_args(argv)
    start(args.sandbox_port) if args.action == "start" else stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
