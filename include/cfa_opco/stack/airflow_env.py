"""The local Airflow's environment, defined once for the Makefile, the demo and the tests.

    python -m cfa_opco.stack.airflow_env init            # migrate the metadata DB, apply airflow_settings.yaml
    python -m cfa_opco.stack.airflow_env airflow ARGS..  # run the airflow CLI in this environment

Airflow keeps its metadata in the ``airflow`` database of the embedded PostgreSQL (so the
LocalExecutor works), its home in ``var/airflow``, and reads the project's ``dags/`` and
``plugins/``. An existing Airflow or Astro CLI does not need any of this.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from cfa_opco import settings
from cfa_opco.stack import airflow_settings


def fernet_key(home: Path) -> str:
    """The key that encrypts connection passwords (OPCO keys) in the metadata database,
    made once per installation and kept out of git."""
    path = home / "fernet.key"
    if not path.exists():
        path.write_text(Fernet.generate_key().decode())
        path.chmod(0o600)
    return path.read_text().strip()


def airflow_env(home: Path | None = None) -> dict[str, str]:
    home = home or settings.VAR_DIR / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.PROJECT_DIR / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.PROJECT_DIR / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.sqlalchemy_url("airflow"),
        "AIRFLOW__CORE__DAG_DISCOVERY_SAFE_MODE": "False",
        "AIRFLOW__CORE__FERNET_KEY": os.environ.get("AIRFLOW__CORE__FERNET_KEY") or fernet_key(home),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
        "CFA_PROJECT_DIR": str(settings.PROJECT_DIR),
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
    }
    return {k: os.environ.get(k, v) if k.startswith("AIRFLOW__") and k != "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
            else v for k, v in env.items()}


def apply_env(home: Path | None = None) -> dict[str, str]:
    """Set the variables in this process (before airflow is imported)."""
    env = airflow_env(home)
    os.environ.update(env)
    return env


def airflow_bin() -> Path:
    return Path(sys.executable).parent / "airflow"


def run_airflow(args: list[str], check: bool = True, quiet: bool = False) -> int:
    env = {**os.environ, **airflow_env()}
    out = subprocess.DEVNULL if quiet else None
    return subprocess.run([str(airflow_bin()), *args], env=env, check=check, stdout=out).returncode


def init(settings_file: Path | None = None, sandbox_port: int | None = None,
         sandbox_rate_limit: float | None = None) -> None:
    """Migrate the metadata database and apply airflow_settings.yaml (idempotent).
    ``sandbox_port`` points the OPCO connections at a sandbox on another port."""
    apply_env()
    run_airflow(["db", "migrate"], quiet=True)
    loaded = airflow_settings.load(settings_file or settings.PROJECT_DIR / "airflow_settings.yaml")
    if sandbox_port:
        airflow_settings.rewrite_sandbox_port(loaded, sandbox_port, sandbox_rate_limit)
    # the ERP and connector connections follow CFA_PG_HOST/CFA_PG_PORT (or CFA_*_DSN)
    moved = set(airflow_settings.rewrite_postgres(loaded))
    for c in loaded.connections:
        if c["conn_id"] in moved:
            print(f"connection {c['conn_id']} -> {c['conn_host']}:{c['conn_port']}/{c['conn_schema']}")
    counts = airflow_settings.apply_to_metadata_db(loaded)
    print("airflow_settings.yaml applied: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("init", "airflow"):
        print(__doc__)
        return 2
    if argv[0] == "init":
        init()
        return 0
    return run_airflow(argv[1:], check=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
