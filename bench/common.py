"""Shared setup of the benchmarks: the embedded PostgreSQL and dedicated bench_ databases."""
from __future__ import annotations

import os

os.environ.setdefault("CFA_DB_PREFIX", "bench_")


def fresh_database(name: str) -> str:
    """Drop and create ``name`` on the embedded server (started if needed); return its DSN."""
    from cfa_opco.stack import embedded_pg

    embedded_pg.start()
    return embedded_pg.recreate_database(name)


def seeded_erps(dossiers: int, seed: int = 7) -> dict:
    """Two fresh bench ERPs seeded with ``dossiers`` dossiers; returns DSNs and timing."""
    import tempfile
    import time
    from pathlib import Path

    from cfa_opco.erp.generator import seed as seed_erp

    dsns = {"erp_main": fresh_database("bench_erp_main"), "erp_est": fresh_database("bench_erp_est")}
    files_root = Path(tempfile.mkdtemp(prefix="bench_erp_files_"))
    t0 = time.perf_counter()
    seed_erp(seed, dossiers, main_dsn=dsns["erp_main"], est_dsn=dsns["erp_est"], files_root=files_root)
    return {**dsns, "files_root": files_root, "seconds": time.perf_counter() - t0}


def bench_sources(erps: dict):
    import dataclasses

    from cfa_opco.sources import load_sources

    return [dataclasses.replace(s, files_root=erps["files_root"] / s.id)
            for s in load_sources(targets={"erp_main": erps["erp_main"], "erp_est": erps["erp_est"]})]
