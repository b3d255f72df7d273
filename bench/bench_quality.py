"""Benchmark of the quality gate on 100,000 dossiers.

    .venv/bin/python bench/bench_quality.py [--dossiers 100000] [--keep]

Seeds the two demo ERPs into dedicated ``bench_`` databases of the embedded PostgreSQL
(cfa_opco.stack.embedded_pg), extracts the batch into a ``bench_`` connector database,
then, each in a child process (so that its peak RSS is the gate's, not the seeding's):

1. the full gate (run_quality_gate: load, Great Expectations suites, verdicts stored,
   HTML/Excel/CSV reports and Data Docs) -> wall time and peak RSS;
2. side by side on the same loaded batch: the GX evaluation (prepare + 5 suites +
   anomalies) and the plain-pandas evaluation of the same rules (prepare + masks +
   anomalies), best of 2 each, great_expectations imported beforehand -> their ratio.

Prints ``quality_gate_100k_seconds``, ``quality_gate_peak_rss_mb`` and
``quality_gx_to_pandas_ratio`` lines (plus details).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN_ID = "bench__quality_100k"


def _admin():
    from cfa_opco.stack.embedded_pg import admin_connection

    return admin_connection()


def make_db(name: str) -> str:
    from cfa_opco.stack.embedded_pg import recreate_database

    assert name.startswith("bench_")
    return recreate_database(name)


def drop_db(name: str) -> None:
    assert name.startswith("bench_")
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


# -- children ------------------------------------------------------------------------------
def child_gate(connector: str, reports: str) -> dict:
    from cfa_opco.quality.gate import run_quality_gate

    t0 = time.perf_counter()
    summary = run_quality_gate(RUN_ID, connector, reports_dir=reports)
    wall = time.perf_counter() - t0
    return {"seconds": wall, "checked": summary["checked"], "quarantined": summary["quarantined"],
            "timings": summary["timings"],
            "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_ratio(connector: str) -> dict:
    from cfa_opco.db.connect import connect
    from cfa_opco.quality import rules as R
    from cfa_opco.quality.batch import load_batch

    conn = connect(connector)
    df = load_batch(conn, RUN_ID)
    conn.close()
    t0 = time.perf_counter()
    from cfa_opco.quality.expectations import GxRunner   # imports great_expectations
    gx_import = time.perf_counter() - t0
    sev = R.severities()
    active = R.active_rules(sev)

    def run_pandas():
        t = time.perf_counter()
        batch = R.prepare_batch(df)
        an = R.build_anomalies(batch, R.failing_positions(batch, active), sev)
        return time.perf_counter() - t, len(an)

    def run_gx():
        t = time.perf_counter()
        batch = R.prepare_batch(df)
        failing, _ = GxRunner().validate(batch, active, sev)
        an = R.build_anomalies(batch, failing, sev)
        return time.perf_counter() - t, len(an)

    pandas_times, gx_times = [], []
    for _ in range(2):
        tp, n_p = run_pandas()
        tg, n_g = run_gx()
        assert n_p == n_g, (n_p, n_g)
        pandas_times.append(tp)
        gx_times.append(tg)
    return {"pandas_seconds": min(pandas_times), "gx_seconds": min(gx_times), "gx_import_seconds": gx_import,
            "anomalies": n_p, "rows": len(df)}


def _run_child(kind: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, f"--child-{kind}", *args], capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {kind} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dossiers", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the bench_ databases")
    parser.add_argument("--child-gate", nargs=2, metavar=("DSN", "REPORTS"))
    parser.add_argument("--child-ratio", nargs=1, metavar="DSN")
    args = parser.parse_args(argv)
    if args.child_gate:
        print(json.dumps(child_gate(*args.child_gate)))
        return 0
    if args.child_ratio:
        print(json.dumps(child_ratio(*args.child_ratio)))
        return 0

    from cfa_opco.stack import embedded_pg

    embedded_pg.start()
    from cfa_opco.connector import migrate
    from cfa_opco.erp.generator import seed
    from cfa_opco.extraction import extract
    from cfa_opco.sources import load_sources

    names = {"erp_main": "bench_erp_main", "erp_est": "bench_erp_est", "connector": "bench_connector"}
    dsns = {k: make_db(v) for k, v in names.items()}
    try:
        with tempfile.TemporaryDirectory(prefix="bench_quality_") as tmp:
            t0 = time.perf_counter()
            seed(42, args.dossiers, main_dsn=dsns["erp_main"], est_dsn=dsns["erp_est"], files_root=Path(tmp) / "files")
            print(f"seeded {args.dossiers} dossiers in {time.perf_counter() - t0:.1f} s", flush=True)
            migrate(dsns["connector"])
            t0 = time.perf_counter()
            sources = load_sources(targets={"erp_main": dsns["erp_main"], "erp_est": dsns["erp_est"]})
            ext = extract(RUN_ID, sources, dsns["connector"])
            print(f"extracted {ext['extracted']} dossiers in {time.perf_counter() - t0:.1f} s", flush=True)

            gate = _run_child("gate", dsns["connector"], str(Path(tmp) / "reports"))
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            ratio = _run_child("ratio", dsns["connector"])
    finally:
        if not args.keep:
            for name in names.values():
                drop_db(name)
    print(f"# gate: {gate['checked']} checked, {gate['quarantined']} quarantined; timings {gate['timings']}")
    print(f"side by side on {ratio['rows']} dossiers ({ratio['anomalies']} anomalies): "
          f"GX {ratio['gx_seconds']:.2f} s, pandas {ratio['pandas_seconds']:.2f} s "
          f"(great_expectations import, excluded: {ratio['gx_import_seconds']:.1f} s)")
    print(f"quality_gate_100k_seconds: {gate['seconds']:.2f}")
    print(f"quality_gate_peak_rss_mb: {peak_mb:.0f}")
    print(f"quality_gx_to_pandas_ratio: {ratio['gx_seconds'] / ratio['pandas_seconds']:.2f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
