"""Constants and small helpers shared by the test modules (import as ``tests.helpers``:
``from conftest import ...`` resolves to whichever conftest pytest loaded last)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from cfa_opco.db.connect import connection

SIREN = "775672272"   # the demo CFA's main SIREN (keys demo-<opco>-775672272 in the sandbox)
SOFTWARE = {"editeur": "cfa-opco-tests", "logiciel": "cfa-opco-connector", "version": "0.1.0"}


def rows(dsn: str, sql: str, *args) -> list[tuple]:
    """All rows of one query (its own connection, closed after)."""
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def sources_file_for(erp: dict, directory: Path) -> Path:
    """config/sources.yaml with absolute SQL paths and the seeded ERP's files root, written in
    ``directory`` (the DAG reads it through the Variable cfa_opco_sources_file)."""
    project = Path(__file__).resolve().parent.parent
    doc = yaml.safe_load((project / "config" / "sources.yaml").read_text())
    for s in doc["sources"]:
        for key in ("dossiers_sql", "pieces_sql", "factures_sql"):
            if s.get(key):
                s[key] = str(project / "config" / s[key])
        s["files_root"] = str(erp["files_root"] / s["id"])
    out = directory / "sources.yaml"
    out.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return out


def opco_conn_env(sbx, opco: str, siren: str = SIREN, key: str | None = None, **extra) -> tuple[str, str]:
    """(conn_id, AIRFLOW_CONN_* JSON) of an ``opco`` connection to a running sandbox."""
    conn_id = f"opco_{opco}_{siren}"
    ex = {"siren": siren, **extra}
    if opco == "akto":
        ex.setdefault("oauth_client_id", "cfa-opco-connector")
        ex.setdefault("oauth_client_secret", "demo-akto-secret")
        ex.setdefault("oauth_token_path", "/akto/oauth/token")
    value = json.dumps({"conn_type": "opco", "host": sbx.api(opco), "password": key or f"demo-{opco}-{siren}",
                        "extra": ex})
    return conn_id, value
