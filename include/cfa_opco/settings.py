"""Where things are and how to reach the databases.

Every DSN has a default on the embedded PostgreSQL (started by ``make up``/``make demo``)
and can be overridden by an environment variable to point at an external server:

    CFA_PG_HOST / CFA_PG_PORT / CFA_PG_USER / CFA_PG_PASSWORD   the embedded default's address
    CFA_ERP_MAIN_DSN, CFA_ERP_EST_DSN, CFA_CONNECTOR_DSN, CFA_AIRFLOW_DSN   one database each
    CFA_ERP_FILES_DIR   where the ERPs' document files are (``{erp_files}`` in config/sources.yaml)

Inside Airflow tasks the databases are reached through connections (``cfa_erp_main``,
``cfa_erp_est``, ``cfa_connector``); these settings serve the command-line tools, the
Makefile and the tests.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = Path(os.environ.get("CFA_PROJECT_DIR", PACKAGE_DIR.parent.parent))
REFERENCE_DIR = PACKAGE_DIR / "reference"
VAR_DIR = Path(os.environ.get("CFA_VAR_DIR", PROJECT_DIR / "var"))
PGDATA_DIR = Path(os.environ.get("CFA_PGDATA", VAR_DIR / "pgdata"))
REPORTS_DIR = Path(os.environ.get("CFA_REPORTS_DIR", VAR_DIR / "reports"))
# the ERPs' document files (the demo generator writes them there; sources.yaml names them
# ``{erp_files}/<source>``): a configured location, so that a task on any worker finds them
ERP_FILES_DIR = Path(os.environ.get("CFA_ERP_FILES_DIR", VAR_DIR / "erp_files"))

PG_HOST = os.environ.get("CFA_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CFA_PG_PORT", "55432"))
PG_USER = os.environ.get("CFA_PG_USER", "postgres")
PG_PASSWORD = os.environ.get("CFA_PG_PASSWORD", "")

# database names on the embedded server; CFA_DB_PREFIX keeps test databases apart
DB_PREFIX = os.environ.get("CFA_DB_PREFIX", "")
DATABASES = {
    "erp_main": DB_PREFIX + "cfa_erp_main",
    "erp_est": DB_PREFIX + "cfa_erp_est",
    "connector": DB_PREFIX + "cfa_connector",
    "airflow": DB_PREFIX + "airflow",
}


def dsn(name: str) -> str:
    """libpq URI of one of the project's databases (``erp_main``, ``connector``...)."""
    override = os.environ.get(f"CFA_{name.upper()}_DSN")
    if override:
        return override
    auth = PG_USER + (f":{PG_PASSWORD}" if PG_PASSWORD else "")
    return f"postgresql://{auth}@{PG_HOST}:{PG_PORT}/{DATABASES[name]}"


def sqlalchemy_url(name: str) -> str:
    """Same database as :func:`dsn`, for SQLAlchemy (Airflow's metadata DB)."""
    return dsn(name).replace("postgresql://", "postgresql+psycopg2://", 1)
