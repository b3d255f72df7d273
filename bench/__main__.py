"""Run every benchmark script (bench/bench_*.py) in its own process, one after the other
(they share the machine's two cores), and print their `metric_name: value` lines."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

METRIC = re.compile(r"^[a-z0-9_]+: \S+")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--dossiers", type=int, default=100_000)
    parser.add_argument("only", nargs="*", help="names of benchmarks to run (default: all)")
    args = parser.parse_args()
    scripts = sorted(Path(__file__).resolve().parent.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if any(o in s.stem for o in args.only)]
    from cfa_opco.stack import embedded_pg

    was_running = embedded_pg.is_running()
    failed = []
    for script in scripts:
        t0 = time.perf_counter()
        print(f"# {script.stem} ...", flush=True)
        proc = subprocess.run([sys.executable, str(script), "--dossiers", str(args.dossiers)],
                              capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            print(line if METRIC.match(line) else f"#   {line}", flush=True)
        if proc.returncode != 0:
            failed.append(script.stem)
            print(f"# {script.stem} FAILED (exit {proc.returncode}):\n" +
                  "\n".join("#   " + l for l in proc.stderr.splitlines()[-25:]), flush=True)
        else:
            print(f"# {script.stem} done in {time.perf_counter() - t0:.0f} s", flush=True)
    if not was_running:   # leave nothing running that the benchmarks started
        embedded_pg.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
