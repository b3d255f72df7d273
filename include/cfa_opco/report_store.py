"""Reports where the tasks do not share a disk (CeleryExecutor on several machines).

The Variable ``cfa_opco_reports_dir`` may name an object store instead of a folder:
``s3://bucket/cfa-reports``, ``gs://…``, ``abfs://…`` or ``file:///mnt/shared/reports``, read
through Airflow's :class:`~airflow.sdk.ObjectStoragePath` (its credentials: the Airflow
connection named by the Variable ``cfa_opco_reports_conn_id``, if any). Then each task writes a
run's reports into a local working copy (:func:`cfa_opco.report_location.reports_root`), and
:func:`publish` uploads them; whoever shows reports (the API server's plugin, the runs home page
written by any worker) first pulls what it shows with :func:`pull_runs` / :func:`pull_file`.

Without a URL (the embedded default) the local folder *is* the store and every function here
does nothing.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

from cfa_opco import report_location

log = logging.getLogger(__name__)

CONN_VARIABLE = "cfa_opco_reports_conn_id"
MARKERS = ("index.html", "quality.json", "summary.json")   # what the runs list reads of each run


def store():
    """The configured object store (an ObjectStoragePath), or None: reports stay local."""
    url = report_location.reports_store_url()
    if not url:
        return None
    from airflow.sdk import ObjectStoragePath  # lazy: only when a store is configured

    return ObjectStoragePath(url, conn_id=report_location._variable(CONN_VARIABLE) or None)


def publish(folder: Path, root: Path | None = None, names: list[str] | None = None) -> int:
    """Upload every file under ``folder`` (a run's folder, or the root's own files when
    ``folder`` is the root; only ``names`` when given) to the store, same relative paths;
    the number of files sent."""
    target = store()
    if target is None:
        return 0
    root = Path(root) if root is not None else report_location.reports_root()
    folder = Path(folder)
    if names is not None:
        files = [folder / n for n in names if (folder / n).is_file()]
    else:
        files = [p for p in (folder.rglob("*") if folder != root else folder.iterdir()) if p.is_file()]
    for path in files:
        dest = target / path.relative_to(root).as_posix()
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
    log.info("reports: %d file(s) of %s published to %s", len(files), folder.name or folder, target)
    return len(files)


def pull_file(rel: str, root: Path | None = None) -> Path | None:
    """The local copy of one report file (``<run folder>/<path>``), fetched from the store
    (None when the store does not have it). Without a store: the local file."""
    root = Path(root) if root is not None else report_location.reports_root()
    local = root / rel
    target = store()
    if target is None:
        return local if local.is_file() else None
    src = target / rel
    try:
        if not src.is_file():
            return None
        data = src.read_bytes()
        mtime = _mtime(src)
    except Exception as exc:   # noqa: BLE001 — each store raises its own errors: shown, never a crash
        log.warning("reports: %s unreadable in the store: %s", rel, exc)
        return local if local.is_file() else None
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    if mtime is not None:
        os.utime(local, (mtime, mtime))
    return local


def pull_runs(root: Path | None = None) -> int:
    """Fetch every run's markers (what the runs list reads) from the store into the local
    working copy; the number of runs found there."""
    target = store()
    if target is None or not target.exists():
        return 0
    root = Path(root) if root is not None else report_location.reports_root()
    n = 0
    for run in target.iterdir():
        if not run.is_dir():
            continue
        n += 1
        for marker in MARKERS:
            pull_file(f"{run.name}/{marker}", root)
    return n


def remove(folder_name: str) -> None:
    """Delete one run's folder from the store (the retention's)."""
    target = store()
    if target is None:
        return
    path = target / folder_name
    if path.exists():
        path.fs.rm(path.path, recursive=True)


def _mtime(path) -> float | None:
    """The object's modification time as a timestamp (each store names it its own way)."""
    info = path.fs.info(path.path)
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None
