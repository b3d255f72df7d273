"""Constants and small helpers shared by the test modules (import as ``tests.helpers``:
``from conftest import ...`` resolves to whichever conftest pytest loaded last)."""
from __future__ import annotations

from cfa_opco.db.connect import connection

SIREN = "775672272"   # the demo CFA's main SIREN (keys demo-<opco>-775672272 in the sandbox)
SOFTWARE = {"editeur": "cfa-opco-tests", "logiciel": "cfa-opco-connector", "version": "0.1.0"}


def rows(dsn: str, sql: str, *args) -> list[tuple]:
    """All rows of one query (its own connection, closed after)."""
    with connection(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()
