"""Shared setup of the benchmarks: the embedded PostgreSQL and dedicated bench_ databases."""
from __future__ import annotations

import os
from pathlib import Path

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


def cpu_seconds(sandbox_pid: int | None = None) -> dict:
    """CPU seconds (user + system) used so far by: this process and its children that have
    exited (``client``: the transmission's worker processes once the pool is closed), the
    embedded PostgreSQL (``pg``: the postmaster, its live backends and those that exited;
    None on an external server) and the sandbox process (``sandbox``). On one machine the
    three share its cores: a rise in the client's or the database's CPU per dossier is
    throughput taken from the sandbox, which wall-clock figures show only through their noise."""
    import resource

    from cfa_opco import settings

    tick = os.sysconf("SC_CLK_TCK")

    def ticks(pid: int, children: bool = False) -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        used = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
        return used / tick

    out: dict = {"client": sum(getattr(resource.getrusage(who), k) for who in
                               (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for k in ("ru_utime", "ru_stime")),
                 "pg": None, "sandbox": None}
    try:
        with open(Path(settings.PGDATA_DIR) / "postmaster.pid") as f:
            postmaster = int(f.readline())
        pg = ticks(postmaster, children=True)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                            pg += ticks(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        out["pg"] = pg
    except (OSError, ValueError):
        pass
    if sandbox_pid:
        try:
            out["sandbox"] = ticks(sandbox_pid)
        except OSError:
            pass
    return out


def cpu_per_item_line(before: dict, after: dict, items: int, what: str = "dossier") -> str:
    """``# CPU per dossier: ...`` from two :func:`cpu_seconds` readings."""
    parts = []
    for key, label in (("client", "transmission processes"), ("pg", "PostgreSQL"), ("sandbox", "sandbox")):
        if before.get(key) is not None and after.get(key) is not None and items:
            parts.append(f"{label} {(after[key] - before[key]) * 1e6 / items:.0f} us")
    return f"# CPU per {what}: " + (", ".join(parts) or "not measured")
