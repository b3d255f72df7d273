"""State follow-up of N dossiers (default 100,000) spread over OPCOs and keys like the real
mix: the sandbox bulk-seeds them (all change state: instructed, then engaged, refused or left
incomplete), the connector DB holds the matching opco_dossier rows, and one
``followup.sync_states`` pass reads every change.

    .venv/bin/python bench/bench_followup.py [--dossiers 100000]

Prints ``status_requests_per_dossier: <value>`` (goal < 0.02) plus other figures."""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import fresh_database  # noqa: E402

# share of contracts per OPCO (rough national mix of apprenticeship contracts; OPCO Santé
# takes no contract by API) and per SIREN of the demo network
OPCO_MIX = {"akto": 0.20, "opcommerce": 0.12, "atlas": 0.10, "ocapiat": 0.06, "mobilites": 0.07,
            "constructys": 0.12, "opco_ep": 0.12, "opco_2i": 0.08, "uniformation": 0.08, "afdas": 0.05}
SIREN_MIX = {"775672272": 0.55, "324578137": 0.30, "418936522": 0.15}
NO_KEY = {("afdas", "324578137")}
SOFTWARE = {"editeur": "cfa-opco-bench", "logiciel": "cfa-opco-connector", "version": "0.1.0"}
RATE = 10.0     # requests/s per key, the sandbox's default limit


def split(n: int) -> dict[tuple[str, str], int]:
    shares = {}
    for o, po in OPCO_MIX.items():
        sirens = {s: ps for s, ps in SIREN_MIX.items() if (o, s) not in NO_KEY}
        tot = sum(sirens.values())
        for s, ps in sirens.items():
            shares[(o, s)] = po * ps / tot
    counts = {k: int(n * v) for k, v in shares.items()}
    rest = n - sum(counts.values())
    for k in sorted(shares, key=shares.get, reverse=True)[:rest]:
        counts[k] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dossiers", type=int, default=100_000)
    ap.add_argument("--page-size", type=int, default=1000)
    a = ap.parse_args()
    n = a.dossiers

    from cfa_opco.connector import migrate
    from cfa_opco.followup import sync_states
    from cfa_opco.providers.opco.hooks.opco import OpcoHook
    from cfa_opco.sandbox.testing import run_sandbox

    dsn = fresh_database("bench_followup_connector")
    migrate(dsn)
    import psycopg2

    with run_sandbox(instant=True) as sbx:          # default per-key rate limit (10/s) stays on
        counts = split(n)
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)
        spread = 3600.0
        t0 = time.monotonic()
        buf = io.StringIO()
        for (opco, siren), count in counts.items():
            if count == 0:
                continue
            conn_id = f"opco_{opco}_{siren}"
            extra = {"siren": siren, "rate_limit_per_second": RATE}
            if opco == "akto":
                extra.update(oauth_client_id="cfa-opco-connector", oauth_client_secret="demo-akto-secret",
                             oauth_token_path="/akto/oauth/token")
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {"conn_type": "http", "host": sbx.api(opco), "password": f"demo-{opco}-{siren}", "extra": extra})
            prefix = f"B{opco.upper().replace('_', '')}{siren[:3]}"
            s = sbx.seed(opco, siren, count, prefix=prefix, start=start.isoformat(), spread_seconds=spread)
            first = int(s["first"].rsplit("-", 1)[1])
            spread_us = int(spread * 1_000_000)
            for i in range(count):     # the sandbox's own creation time of dossier i (integer µs)
                t = start + dt.timedelta(microseconds=spread_us * i // count)
                buf.write(f"erp_main\t{prefix}-{first + i:09d}\t{opco}\t{siren}\t{conn_id}\tCONTRAT\tTRANSMIS\t"
                          f"{t.isoformat()}\tbench-run\t{t.isoformat()}\t{t.isoformat()}\n")
        seed_s = time.monotonic() - t0
        t1 = time.monotonic()
        buf.seek(0)
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            cur.copy_expert("COPY opco_dossier (source_id, numero_interne, opco_code, cfa_siren, conn_id, nature, etat, "
                            "etat_at, first_run_id, sent_at, last_checked_at) FROM STDIN", buf)
            cur.execute("ANALYZE opco_dossier")
        load_s = time.monotonic() - t1

        def factory(cid: str):
            return OpcoHook(cid, software=SOFTWARE)

        t2 = time.monotonic()
        r = sync_states(dsn, hook_factory=factory, page_size=a.page_size, lag_seconds=2)
        sync_s = time.monotonic() - t2
        t3 = time.monotonic()
        r2 = sync_states(dsn, hook_factory=factory, page_size=a.page_size, lag_seconds=2)
        sync2_s = time.monotonic() - t3
        with conn, conn.cursor() as cur:
            cur.execute("SELECT etat, count(*) FROM opco_dossier GROUP BY 1 ORDER BY 1")
            final = dict(cur.fetchall())
            cur.execute("SELECT count(*) FROM opco_state_change")
            history = cur.fetchone()[0]
        conn.close()
        stats = sbx.stats()
        got_429 = sum(v["requests_by_status"].get("429", 0) for v in stats.values())

    v2 = sum(c for (o, _), c in counts.items() if o in ("akto", "opcommerce", "atlas", "ocapiat", "mobilites"))
    print(f"status_requests_per_dossier: {r['requests'] / n:.5f}")
    print(f"# dossiers={n} connections={r['connections']} v2_dossiers={v2} v1_only_dossiers={n - v2}")
    print(f"# first_sync: requests={r['requests']} changes={r['changes']} seen={r['seen']} unknown={r['unknown']} "
          f"errors={len(r['errors'])} seconds={sync_s:.1f} dossiers_per_s={n / sync_s:.0f}")
    print(f"# by_etat: {json.dumps(r['by_etat'], sort_keys=True)}")
    print(f"# steady_state_sync: requests={r2['requests']} changes={r2['changes']} seconds={sync2_s:.1f} "
          f"(v1-only OPCOs re-list their still-open dossiers, 100 per call)")
    print(f"# opco_dossier_after: {json.dumps(final, sort_keys=True)} state_change_rows={history} http_429={got_429}")
    print(f"# setup: seed_seconds={seed_s:.1f} copy_seconds={load_s:.1f}")
    if r["errors"]:
        print(f"# errors: {r['errors']}")
    if r["changes"] != n:
        raise SystemExit(f"expected {n} changes, got {r['changes']}")


if __name__ == "__main__":
    main()
