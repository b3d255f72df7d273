"""ERP sources as configuration (config/sources.yaml).

A source is an Airflow connection plus SQL mapping its schema onto the canonical dossier
model; adding one needs no Python. This module reads and checks that configuration.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cfa_opco import settings

DEFAULT_CONFIG = settings.PROJECT_DIR / "config" / "sources.yaml"
# placeholders a path of the sources file may start with (else: relative to the file)
PLACEHOLDERS = {"erp_files": lambda: settings.ERP_FILES_DIR}


class SourceConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Source:
    id: str
    conn_id: str
    dossiers_sql: str
    label: str = ""
    pieces_sql: str | None = None
    factures_sql: str | None = None       # the source's invoices (cfa_opco.factures.COLUMNS)
    files_root: Path | None = None
    writeback: dict = field(default_factory=dict)
    target: str | None = None   # a DSN that overrides conn_id (command-line tools, tests)

    @property
    def connection(self) -> str:
        return self.target or self.conn_id


def files_root(path: Path, raw: str, where: str) -> Path:
    """A source's files folder: ``{erp_files}/erp_main`` under the configured ERP files
    location (settings.ERP_FILES_DIR, env CFA_ERP_FILES_DIR), so every worker finds the same
    files wherever its own var/ is; an absolute path; or a path relative to the sources file."""
    try:
        expanded = str(raw).format_map({k: str(v()) for k, v in PLACEHOLDERS.items()})
    except (KeyError, ValueError, IndexError) as exc:
        raise SourceConfigError(f"{where}: files_root '{raw}': unknown placeholder {exc} "
                                f"(known: {', '.join('{' + k + '}' for k in PLACEHOLDERS)})") from exc
    return (path.parent / expanded).resolve()


def load_sources(path: str | Path | None = None, targets: dict[str, str] | None = None) -> list[Source]:
    """Read the sources file; ``targets`` maps a source id to a DSN used instead of its
    Airflow connection."""
    path = Path(path or DEFAULT_CONFIG)
    if not path.exists():
        raise SourceConfigError(f"sources file not found: {path} (set the Airflow Variable "
                                "cfa_opco_sources_file or create config/sources.yaml)")
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    sources, seen = [], set()
    for i, raw in enumerate(doc.get("sources") or []):
        where = f"{path}: sources[{i}]"
        for key in ("id", "conn_id", "dossiers_sql"):
            if not raw.get(key):
                raise SourceConfigError(f"{where}: '{key}' is required")
        if raw["id"] in seen:
            raise SourceConfigError(f"{where}: duplicate source id '{raw['id']}'")
        seen.add(raw["id"])

        def read_sql(rel: str | None) -> str | None:
            if rel is None:
                return None
            sql_path = (path.parent / rel).resolve()
            if not sql_path.exists():
                raise SourceConfigError(f"{where}: SQL file not found: {sql_path}")
            return sql_path.read_text(encoding="utf-8").strip().rstrip(";")

        sources.append(Source(
            id=raw["id"], conn_id=raw["conn_id"], label=raw.get("label", ""),
            dossiers_sql=read_sql(raw["dossiers_sql"]), pieces_sql=read_sql(raw.get("pieces_sql")),
            factures_sql=read_sql(raw.get("factures_sql")),
            files_root=files_root(path, raw["files_root"], where) if raw.get("files_root") else None,
            writeback=raw.get("writeback") or {},
            target=(targets or {}).get(raw["id"])))
    if not sources:
        raise SourceConfigError(f"{path}: no source configured")
    return sources
