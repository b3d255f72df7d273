"""Transmission throughput against the sandbox, side by side with the sandbox's own
capacity measured by wrk with the same payloads, in one run:

- transmit_to_capacity_ratio: 10,000 dossiers across all OPCOs and 3 SIRENs, rate limit
  off, through the full exactly-once path (ledger intent + send + outcome), POSTs/s — each
  contract, and the convention de formation that follows it where the ERP holds one (issue 12:
  two POSTs for most dossiers) — divided by the dossier POSTs/s wrk sustains on the same
  sandbox (measured just before and just after the transmission, averaged);
- rate_limited_share_of_allowed: with the sandbox's limit on (10 requests/s per key), the
  achieved request rate per key (contracts and their conventions) as a share of the allowed
  rate, and the 429s received;
- transmit_heavy_faults_to_clean_ratio: the same dossiers sent twice in one run of this
  script, into two fresh connector databases, once with the sandbox's faults off and once
  with its ``heavy`` preset (15 % 503, 15 % 429 with Retry-After 1–2 s, 3 % answers held 35 s
  after the write, 2 % connections dropped after the write, on every route): dossiers/s
  brought to a final state (sent, confirmed by reading back, or refused) with faults over
  without; same threads and read timeout in both (printed);
- transmit_heavy_faults_duplicates: dossiers the sandbox created twice in the heavy run
  (its own count), and the dossiers left in doubt, printed alongside.
Documents are left out of both figures (they are separate requests: their throughput is
printed as an information line)."""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_sources, cpu_per_item_line, cpu_seconds, fresh_database, seeded_erps  # noqa: E402


def _prepare(run_id: str, connector: str, sources) -> dict:
    from cfa_opco.extraction import extract
    from cfa_opco.quality.gate import run_quality_gate
    from cfa_opco.outbox import plan

    extract(run_id, sources, connector)
    run_quality_gate(run_id, connector, write_reports=False, data_docs=False)
    return plan(run_id, connector)


def _transmit(args) -> dict:
    run_id, connector, conn_id, workers = args
    from cfa_opco.outbox import transmit_batch

    return transmit_batch(run_id, connector, conn_id, max_workers=workers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dossiers", type=int, default=100_000, help="(ignored: this benchmark uses 10,000)")
    parser.add_argument("--transmit-dossiers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration")
    parser.add_argument("--processes", type=int, default=3, help="mapped tasks at once")
    parser.add_argument("--threads", type=int, default=8, help="threads per mapped task (operator default)")
    parser.add_argument("--heavy-processes", type=int, default=16,
                        help="mapped tasks at once in the heavy-faults comparison (both of its runs): 16 is "
                             "Airflow's default max_active_tasks_per_dag, what the daily DAG runs at once within "
                             "the OPCO pools (3 slots each)")
    parser.add_argument("--heavy-threads", type=int, default=32,
                        help="threads per mapped task in the heavy-faults comparison (both of its runs)")
    parser.add_argument("--read-timeout", type=float, default=2.0,
                        help="read timeout of the sends in the heavy-faults comparison (both of its runs)")
    parser.add_argument("--only-heavy", action="store_true", help="only the heavy-faults comparison")
    parser.add_argument("--heavy-dossiers", type=int, default=20000,
                        help="dossiers of the heavy-faults comparison (seeded apart, sent in both of its runs): a "
                             "network's day; each batch's tail of faults is a fixed cost, small volumes measure it")
    args = parser.parse_args()

    erps = seeded_erps(args.transmit_dossiers, seed=11)
    sources = [dataclasses.replace(s, pieces_sql=None) for s in bench_sources(erps)]
    print(f"# seeded {args.transmit_dossiers} dossiers in {erps['seconds']:.1f} s")

    if not args.only_heavy:
        _capacity_and_rate_limit(args, sources)
    if args.heavy_dossiers != args.transmit_dossiers:
        erps = seeded_erps(args.heavy_dossiers, seed=13)
        sources = [dataclasses.replace(s, pieces_sql=None) for s in bench_sources(erps)]
    _heavy_faults(args, sources)


def _capacity_and_rate_limit(args, sources) -> None:
    from cfa_opco.sandbox.loadtest import measure_post_capacity
    from cfa_opco.sandbox.testing import run_sandbox
    from cfa_opco.stack.airflow_settings import sandbox_connection_env

    # ---- 1. rate limit off: capacity (wrk) and transmission, same sandbox, same payloads
    with run_sandbox(instant=True, rate_limit=0) as sbx:
        os.environ.update(sandbox_connection_env(sbx.port, extra_overrides={"rate_limit_per_second": 0}))
        connector = fresh_database("bench_connector")
        from cfa_opco.connector import migrate

        migrate(connector)
        planned = _prepare("bench_fast", connector, sources)
        batches = [b for bs in planned["batches"].values() for b in bs]
        from cfa_opco.db.connect import connection
        from cfa_opco.dossier.payload import build_payload

        with connection(connector) as conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM staged_dossier WHERE nature = 'CONTRAT' LIMIT 1")
            cols = [d[0] for d in cur.description]
            template = build_payload(dict(zip(cols, cur.fetchone())))
        siren = template["organismeFormation"]["siret"][:9]
        before = measure_post_capacity(sbx.base_url, template, seconds=args.seconds, opco="atlas", siren=siren)
        sbx.reset(keep_settings=True)
        # as the DAG runs them: each (OPCO, SIREN) batch a mapped task in its own process (forked
        # from a process that has imported the package, as the LocalExecutor's task runner is),
        # with the operator's default threads; three at a time, the slots of an OPCO's pool;
        # largest batches first, as planned_batches orders the mapped tasks
        batches.sort(key=lambda b: -b["count"])
        cpu_before = cpu_seconds(sbx.proc.pid if sbx.proc else None)
        with cf.ProcessPoolExecutor(max_workers=args.processes) as pool:
            t0 = time.perf_counter()
            results = list(pool.map(_transmit, [("bench_fast", connector, b["conn_id"], args.threads)
                                                for b in batches]))
            elapsed = time.perf_counter() - t0
        cpu_after = cpu_seconds(sbx.proc.pid if sbx.proc else None)   # the pool's workers have exited
        sent = sum(r["sent"] for r in results)
        posts = sent + sum(r["conventions_sent"] for r in results)
        dups = sum(len(sbx.creations(code)["duplicates"]) for code in planned["batches"])
        # capacity measured just before and just after the transmission, averaged: this
        # virtual machine's speed drifts by tens of percent within minutes
        after = measure_post_capacity(sbx.base_url, template, seconds=args.seconds, opco="atlas", siren=siren)
        capacity = (before + after) / 2
        print(f"# sandbox capacity (wrk, dossier POSTs): {before:.0f}/s before, {after:.0f}/s after")
        print(f"# transmitted {sent} dossiers and {posts - sent} conventions in {elapsed:.1f} s = "
              f"{sent / elapsed:.0f} dossiers/s, {posts / elapsed:.0f} POSTs/s over {len(batches)} (OPCO, SIREN) "
              f"batches, {args.processes} at a time x {args.threads} threads; duplicates at the sandbox: {dups}")
        # where the two cores went during the transmission (robust to the machine's drift, unlike
        # the ratio): the client's and the database's CPU per dossier is taken from the sandbox
        print(cpu_per_item_line(cpu_before, cpu_after, sent))
        print(f"transmit_to_capacity_ratio: {posts / elapsed / capacity:.2f}")

    # ---- 2. rate limit on (10/s per key): paced by the hook, no 429 storm
    allowed = 10.0
    with run_sandbox(instant=True, rate_limit=allowed) as sbx:
        os.environ.update(sandbox_connection_env(sbx.port, extra_overrides={"rate_limit_per_second": allowed}))
        connector = fresh_database("bench_connector_rl")
        migrate(connector)
        planned = _prepare("bench_rl", connector, sources)
        # three keys at once (one per SIREN of one OPCO), ~25 s each
        chosen = sorted(planned["batches"]["atlas"], key=lambda b: -b["count"])[:3]
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(max_workers=len(chosen)) as pool:
            futs = {b["conn_id"]: pool.submit(_limited, connector, b["conn_id"], 250) for b in chosen}
        shares = []
        for conn_id, fut in futs.items():
            sent, requests, seconds = fut.result()
            shares.append(requests / seconds / allowed)
            print(f"# {conn_id}: {sent} dossiers ({requests} POSTs with their conventions) in {seconds:.1f} s = "
                  f"{requests / seconds:.2f} requests/s (allowed {allowed:.0f}/s)")
        stats = sbx.stats("atlas")
        n429 = (stats.get("requests_by_status") or stats.get("status") or {}).get("429", 0)
        print(f"# HTTP 429 received: {n429}")
        print(f"rate_limited_share_of_allowed: {min(shares):.2f}")
        print(f"rate_limited_429_count: {n429}")


def _transmit_heavy(args) -> dict:
    run_id, connector, conn_id, workers, read_timeout = args
    from cfa_opco.outbox import transmit_batch

    t0 = time.perf_counter()
    out = transmit_batch(run_id, connector, conn_id, max_workers=workers, read_timeout=read_timeout,
                         retry_base=0.1, deadline_seconds=600)
    return {**out, "seconds": time.perf_counter() - t0, "count": out["sent"] + out["resolved_in_doubt"] + out["rejected"]}


def _heavy_faults(args, sources) -> None:
    """The same dossiers, faults off then the heavy preset, same sandbox, same settings."""
    from cfa_opco.connector import migrate
    from cfa_opco.sandbox.testing import run_sandbox
    from cfa_opco.stack.airflow_settings import sandbox_connection_env

    # idempotency off: a dossier sent twice is created twice, so the count shows any double
    with run_sandbox(instant=True, rate_limit=0, overrides={"idempotency": False}) as sbx:
        os.environ.update(sandbox_connection_env(sbx.port, extra_overrides={"rate_limit_per_second": 0}))
        rates, out = {}, {}
        for label, preset in (("clean", "off"), ("heavy", "heavy")):
            connector = fresh_database(f"bench_connector_{label}")
            migrate(connector)
            planned = _prepare(f"bench_{label}", connector, sources)
            batches = sorted((b for bs in planned["batches"].values() for b in bs), key=lambda b: -b["count"])
            sbx.reset(keep_settings=True)
            sbx.set_fault_preset(preset)
            with cf.ProcessPoolExecutor(max_workers=args.heavy_processes) as pool:
                t0 = time.perf_counter()
                results = list(pool.map(_transmit_heavy, [(f"bench_{label}", connector, b["conn_id"],
                                                           args.heavy_threads, args.read_timeout)
                                                          for b in batches]))
                elapsed = time.perf_counter() - t0
            sbx.set_fault_preset("off")
            final = sum(r["sent"] + r["resolved_in_doubt"] + r["rejected"] for r in results)
            tot = {k: sum(r[k] for r in results) for k in ("sent", "resolved_in_doubt", "rejected", "in_doubt",
                                                             "retried_later", "ambiguous", "read_backs",
                                                             "key_pauses")}
            rates[label] = final / elapsed
            out[label] = (tot, sbx.duplicates_created(), sum(b["count"] for b in batches))
            per = sorted((r["seconds"], r["count"]) for r in results)
            print(f"# {label}: batch seconds min {per[0][0]:.1f} / median {per[len(per) // 2][0]:.1f} / max "
                  f"{per[-1][0]:.1f} (largest batch {max(c for _, c in per)} dossiers)")
            print(f"# {label} ({preset} faults): {final} of {out[label][2]} dossiers final in {elapsed:.1f} s = "
                  f"{rates[label]:.0f}/s; {tot}; created twice at the sandbox: {out[label][1]}")
        print(f"# both runs: {len(batches)} (OPCO, SIREN) batches, {args.heavy_processes} at a time x "
              f"{args.heavy_threads} threads, read timeout {args.read_timeout:.1f} s (a held answer is read back "
              "after it), Retry-After honoured per request, the key paused only on consecutive 429s")
        print(f"# volume: {out['heavy'][2]} routed dossiers ({args.heavy_dossiers} seeded); the tail of each batch "
              "(chains of Retry-After 1-2 s, read-backs) is a fixed cost: the ratio rises with the volume")
        print(f"transmit_heavy_faults_volume: {out['heavy'][2]}")
        print(f"transmit_heavy_faults_to_clean_ratio: {rates['heavy'] / rates['clean']:.2f}")
        print(f"transmit_heavy_faults_in_doubt: {out['heavy'][0]['in_doubt']}")
        print(f"transmit_heavy_faults_duplicates: {out['heavy'][1]}")


def _limited(connector: str, conn_id: str, limit: int) -> tuple[int, int, float]:
    """Send up to ``limit`` dossiers of the key's batch; return (dossiers sent, POSTs, seconds)."""
    from cfa_opco.db.connect import connection
    from cfa_opco.outbox import transmit_batch

    with connection(connector) as conn, conn.cursor() as cur:   # keep the batch to ``limit`` dossiers
        cur.execute("""UPDATE transmission_plan SET decision = 'FILTERED' WHERE run_id = 'bench_rl'
                       AND conn_id = %s AND numero_interne NOT IN (
                           SELECT numero_interne FROM transmission_plan WHERE run_id = 'bench_rl'
                           AND conn_id = %s AND decision = 'ROUTED' AND nature = 'CONTRAT'
                           ORDER BY numero_interne LIMIT %s)""", (conn_id, conn_id, limit))
    t0 = time.perf_counter()
    result = transmit_batch("bench_rl", connector, conn_id, max_workers=8)
    return result["sent"], result["sent"] + result["conventions_sent"], time.perf_counter() - t0


if __name__ == "__main__":
    main()
