"""The connector's own database: extraction batches, registry, ledger, quarantine."""
from pathlib import Path

from cfa_opco.db.migrate import migrate as _migrate

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def migrate(target: str) -> list[str]:
    """Bring the connector's database to the current schema (idempotent)."""
    return _migrate(target, MIGRATIONS_DIR)
