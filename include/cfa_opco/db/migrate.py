"""Versioned SQL migrations: ``V<nnn>__<name>.sql`` files applied once, in order.

Each database (each ERP demo schema, the connector's own database) has its folder of
migrations. Applied versions are recorded with their checksum in ``schema_migrations``;
a file edited after it was applied is refused, so a schema never silently diverges.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cfa_opco.db.connect import connection

_NAME = re.compile(r"^V(\d+)__(\w+)\.sql$")


class MigrationError(RuntimeError):
    pass


def pending_files(folder: Path) -> list[tuple[int, str, Path]]:
    files = []
    for path in sorted(folder.glob("V*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"{path}: migration files are named V<number>__<name>.sql")
        files.append((int(m.group(1)), m.group(2), path))
    return sorted(files)


def migrate(target: str, folder: Path) -> list[str]:
    """Apply the folder's migrations not yet applied to ``target``; return their names."""
    applied_now = []
    with connection(target) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('cfa_opco.migrate'))")
        cur.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                         version integer PRIMARY KEY, name text NOT NULL,
                         checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
        cur.execute("SELECT version, checksum FROM schema_migrations")
        done = dict(cur.fetchall())
        for version, name, path in pending_files(folder):
            sql = path.read_text(encoding="utf-8")
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                if done[version] != checksum:
                    raise MigrationError(
                        f"{path.name} was changed after it was applied to this database; "
                        "add a new migration file instead of editing an applied one")
                continue
            cur.execute(sql)
            cur.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (version, name, checksum))
            applied_now.append(path.name)
    return applied_now
