"""Capacity of the OPCO sandbox, measured with wrk (rate limit off).

    .venv/bin/python bench/bench_sandbox.py [--seconds 10] [--seed 20000]

Prints ``sandbox_post_rps: <value>`` (dossier POSTs, distinct numeroInterne each) and
``sandbox_read_rps: <value>`` (pages of /v2/dossiers/etats, 100 dossiers a page), plus
other figures on other lines."""
from __future__ import annotations

import argparse
import time

import httpx

from cfa_opco.sandbox import sample_dossier
from cfa_opco.sandbox.loadtest import ensure_wrk, measure_post_capacity, measure_read_capacity
from cfa_opco.sandbox.testing import demo_headers, run_sandbox


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--dossiers", "--seed", type=int, default=20000, dest="seed",
                    help="dossiers bulk-loaded for the read figure (python -m bench passes --dossiers)")
    ap.add_argument("--connections", type=int, default=32)
    a = ap.parse_args()
    ensure_wrk()
    opco, siren = "atlas", "775672272"
    with run_sandbox(instant=True, rate_limit=0) as sbx:
        tpl = sample_dossier(opco, siren)
        measure_post_capacity(sbx.base_url, tpl, 2, opco=opco, connections=a.connections, prefix="WARM")
        post = measure_post_capacity(sbx.base_url, tpl, a.seconds, opco=opco, connections=a.connections,
                                     detail=True)
        print(f"sandbox_post_rps: {post.ok_rps:.1f}")
        print(f"# post_detail: requests={post.requests} non_2xx={post.non_2xx} socket_errors={post.socket_errors} "
              f"p50_ms={post.p50_ms:.1f} p99_ms={post.p99_ms:.1f}")
        t = time.monotonic()
        seeded = sbx.seed(opco, "324578137", a.seed, prefix="RD", spread_seconds=86400)
        print(f"# seed_seconds: {time.monotonic() - t:.2f} ({seeded['count']} dossiers)")
        pages = max(1, a.seed // 100)
        read = measure_read_capacity(sbx.base_url, a.seconds, opco=opco, siren="324578137", pages=pages,
                                     page_size=100, connections=a.connections, detail=True)
        print(f"sandbox_read_rps: {read.ok_rps:.1f}")
        print(f"# read_detail: pages_of=100 pages={pages} requests={read.requests} non_2xx={read.non_2xx} "
              f"p50_ms={read.p50_ms:.1f} p99_ms={read.p99_ms:.1f} dossiers_per_s={read.ok_rps * 100:.0f}")
        nis = [f"RD-{int(seeded['first'].split('-')[1]) + i:09d}" for i in range(0, a.seed, max(1, a.seed // 500))]
        paths = [f"/{opco}/ApiEchangeCFA/v2/dossiers?numeroInterne={ni}" for ni in nis]
        one = measure_read_capacity(sbx.base_url, min(a.seconds, 5), opco=opco, siren="324578137", paths=paths,
                                    connections=a.connections, detail=True)
        print(f"sandbox_read_one_rps: {one.ok_rps:.1f}")
        with httpx.Client(trust_env=False) as c:
            r = c.get(sbx.api(opco) + "/v1/status", headers=demo_headers(opco, siren))
            assert r.status_code == 200


if __name__ == "__main__":
    main()
