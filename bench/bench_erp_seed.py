"""Seeding the demo ERPs with 100,000 dossiers (target: under a minute), and extracting
them into a connector batch."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_sources, fresh_database, seeded_erps  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dossiers", type=int, default=100_000)
    args = parser.parse_args()
    erps = seeded_erps(args.dossiers)
    print(f"erp_seed_{args.dossiers // 1000}k_seconds: {erps['seconds']:.1f}")
    from cfa_opco.connector import migrate
    from cfa_opco.extraction import extract

    connector = fresh_database("bench_connector")
    migrate(connector)
    t0 = time.perf_counter()
    summary = extract("bench", bench_sources(erps), connector)
    assert summary["extracted"] == args.dossiers, summary
    print(f"extraction_{args.dossiers // 1000}k_seconds: {time.perf_counter() - t0:.1f}")


if __name__ == "__main__":
    main()
