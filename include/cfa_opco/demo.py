"""``make demo``: the daily flow end to end on the embedded stack.

Starts the embedded PostgreSQL, reseeds the demo ERPs, resets the connector's demo
database and the OPCO sandbox's state (so every demo starts from the same place),
prepares the local Airflow (metadata DB, connections, pools, variables), serves the
sandbox, runs the daily DAG once with ``airflow dags test``, prints the run's summary and
stops what it started. Airflow's full log goes to var/logs/.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time

from cfa_opco import settings
from cfa_opco.erp.generator import seed
from cfa_opco.pipeline.run_report import BUCKETS
from cfa_opco.sandbox.testing import run_sandbox
from cfa_opco.stack import airflow_env, embedded_pg

DEMO_RATE_LIMIT = 95.0


def _print_summary(summary: dict, log_path) -> None:
    """Every extracted dossier in one bucket (labels of the run report), the buckets' total,
    then the OPCOs' decisions on the transmitted ones."""
    print()
    print("=" * 78)
    print(f" CFA → OPCO daily run  {summary['run_id']}")
    print("=" * 78)
    print(f"  {'dossiers extraits':<62} {summary.get('extracted', '—'):>6}")
    buckets = summary.get("buckets") or {}
    for key, label in BUCKETS.items():
        if buckets.get(key) or key in ("transmitted", "quarantined", "in_doubt"):
            print(f"    {label.split(' (')[0]:<60} {buckets.get(key, 0):>6}")
    print(f"    {'= total des cases':<60} {sum(buckets.values()):>6}")
    print(f"  {'décisions des OPCO sur les dossiers transmis :':<62}")
    for label, key in (("acceptés (ENGAGE)", "accepted"), ("refusés (REFUSE)", "refused"),
                       ("incomplets (pièces manquantes)", "incomplete"), ("décision attendue", "pending_decision"),
                       ("suivi impossible (OPCO illisible)", "suivi_impossible")):
        if summary.get(key) or key in ("accepted", "refused"):
            print(f"    {label:<60} {summary.get(key, 0):>6}")
    if summary.get("failed_sources"):
        print(f"  sources NOT extracted   {', '.join(summary['failed_sources'])}")
    print()
    if summary.get("reports"):
        print(f"  quality reports: {summary['reports']}")
    if summary.get("run_report"):
        print(f"  run report:      {summary['run_report']}")
    print(f"  run summary:     {summary.get('summary_file')}")
    print(f"  Airflow log:     {log_path}")
    print("=" * 78)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfa_opco.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dossiers", type=int, default=2000)
    parser.add_argument("--sandbox-port", type=int, default=8085)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    was_running = embedded_pg.is_running()
    embedded_pg.start()
    print(f"[demo] embedded PostgreSQL on {settings.PG_HOST}:{settings.PG_PORT}")
    try:
        for name in ("erp_main", "erp_est", "connector"):
            embedded_pg.recreate_database(settings.DATABASES[name])
        shutil.rmtree(settings.VAR_DIR / "erp_files", ignore_errors=True)
        counts = seed(args.seed, args.dossiers)
        print(f"[demo] demo ERPs seeded: {args.dossiers} dossiers (seed {args.seed}), "
              f"{counts['erp_main.entreprise'] + counts['erp_est.T_ENTREPRISE']} companies")
        # the demo's OPCOs allow 100 requests/s per key (real ones about 10) so that the run,
        # whose mapped tasks `airflow dags test` executes one after the other, takes a minute
        airflow_env.init(sandbox_port=args.sandbox_port, sandbox_rate_limit=DEMO_RATE_LIMIT)
        sandbox_dir = settings.VAR_DIR / "sandbox"
        sandbox_dir.mkdir(parents=True, exist_ok=True)
        db = sandbox_dir / "demo.sqlite"
        for suffix in ("", "-wal", "-shm"):
            (sandbox_dir / f"demo.sqlite{suffix}").unlink(missing_ok=True)
        logs = settings.VAR_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        log_path = logs / f"demo-{stamp}.log"
        overrides = {"delays": {"instruction": 1, "decision": 2, "reglement": 2},
                     "rate_limit": {"per_second": DEMO_RATE_LIMIT / 0.95}}
        with run_sandbox(db=db, port=args.sandbox_port, overrides=overrides,
                         log_path=logs / f"sandbox-{stamp}.log"):
            print(f"[demo] OPCO sandbox on http://127.0.0.1:{args.sandbox_port} (11 OPCOs)")
            print("[demo] running the DAG cfa_opco_daily (airflow dags test) ...")
            with open(log_path, "w") as log:
                env = {**os.environ, **airflow_env.airflow_env()}
                rc = subprocess.run([str(airflow_env.airflow_bin()), "dags", "test", "cfa_opco_daily"],
                                    env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        runs = sorted((settings.REPORTS_DIR / "runs").glob("*.summary.json"), key=lambda p: p.stat().st_mtime)
        if rc != 0 or not runs:
            print(f"[demo] the DAG run failed (exit {rc}); see {log_path}", file=sys.stderr)
            if runs:
                _print_summary(json.loads(runs[-1].read_text()), log_path)
            return 1
        summary = json.loads(runs[-1].read_text())
        summary["summary_file"] = str(runs[-1])
        _print_summary(summary, log_path)
        print(f"[demo] done in {time.perf_counter() - t0:.0f} s")
        return 0
    finally:
        if not was_running:
            embedded_pg.stop()


if __name__ == "__main__":
    sys.exit(main())
