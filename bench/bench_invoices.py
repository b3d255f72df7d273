"""The invoice cycle against the sandbox (rate limit off, instant instruction and payment),
side by side with the dossier path on the same ERP seed, in one run (issue 12, point 9):

- invoice_cycle_10k_seconds: the ERPs' invoices frozen for the run (stage_invoices), checked by
  the suite cfa_opco_facture (the quality gate's invoice part), sent exactly once
  (send_invoices) and followed to paid (sync_factures until every invoice the OPCO can report
  is final) — seconds per 10,000 invoices;
- invoice_cycle_to_dossier_path_ratio: that figure over the dossier path's seconds per 10,000
  dossiers (extraction, the gate's dossier suites, planning, transmission, state follow-up to
  ENGAGE), same machine, same run;
- invoice_cycle_duplicates: invoices the sandbox holds twice for one échéance or number (0).
The ERPs are seeded with enough dossiers to hold about ``--invoices`` invoices (the demo
generator invoices about 0.47 per dossier)."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_sources, fresh_database, seeded_erps  # noqa: E402

INVOICES_PER_DOSSIER = 0.465


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dossiers", type=int, default=100_000, help="(ignored: sized from --invoices)")
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    from cfa_opco.connector import migrate
    from cfa_opco.extraction import extract
    from cfa_opco.facture_followup import sync_factures
    from cfa_opco.factures import stage_invoices
    from cfa_opco.followup import sync_states
    from cfa_opco.opcos import opco_codes
    from cfa_opco.outbox import plan, transmit_batch
    from cfa_opco.pipeline.invoicing import send_invoices
    from cfa_opco.quality.gate import run_quality_gate
    from cfa_opco.sandbox.testing import run_sandbox
    from cfa_opco.stack.airflow_settings import sandbox_connection_env

    dossiers = math.ceil(args.invoices / INVOICES_PER_DOSSIER)
    erps = seeded_erps(dossiers, seed=11)
    sources = bench_sources(erps)
    run = "bench_invoices"
    with run_sandbox(instant=True, rate_limit=0) as sbx:
        os.environ.update(sandbox_connection_env(sbx.port, extra_overrides={"rate_limit_per_second": 0}))
        connector = fresh_database("bench_connector")
        migrate(connector)
        # ---- the dossier path
        t0 = time.perf_counter()
        extracted = extract(run, sources, connector)
        t_extract = time.perf_counter() - t0
        t0 = time.perf_counter()
        staged = stage_invoices(run, sources, connector)
        t_stage = time.perf_counter() - t0
        t0 = time.perf_counter()
        gate = run_quality_gate(run, connector, write_reports=False, data_docs=False)
        t_gate_total = time.perf_counter() - t0
        t_gate_invoices = float((gate.get("timings") or {}).get("invoices") or 0.0)
        t0 = time.perf_counter()
        planned = plan(run, connector)
        for batches in planned["batches"].values():
            for b in batches:
                transmit_batch(run, connector, b["conn_id"], max_workers=args.threads)
        sync_states(connector, lag_seconds=0)
        t_send_dossiers = time.perf_counter() - t0
        n_dossiers = extracted.get("extracted") or dossiers
        dossier_path = t_extract + (t_gate_total - t_gate_invoices) + t_send_dossiers
        # ---- the invoice cycle
        t0 = time.perf_counter()
        out = send_invoices(run, connector, max_workers=args.threads)
        t_send = time.perf_counter() - t0
        t0 = time.perf_counter()
        follow = {"changes": 0, "requests": 0}
        for _ in range(20):             # until no invoice the OPCOs can report is left open
            r = sync_factures(connector, lag_seconds=0, record_proofs=True)
            follow["changes"] += r["changes"]
            follow["requests"] += r["requests"]
            open_ = sum(1 for x in r.get("by_etat", {}) if x == "EN_COURS")
            if r["connections"] == 0 or (not open_ and r["changes"] == 0):
                break
            time.sleep(0.2)
        t_follow = time.perf_counter() - t0
        n_invoices = staged.get("staged") or sum(out["buckets"].values())
        cycle = t_stage + t_gate_invoices + t_send + t_follow
        held = [f for code in opco_codes() for f in sbx.factures(code)["factures"]]
        dups = (len(held) - len({f["numeroInterneFacture"] for f in held})
                + len(held) - len({(f["numeroInterneDossier"], f["echeance"]) for f in held}))
    per10k_inv = cycle * 10_000 / max(1, n_invoices)
    per10k_dos = dossier_path * 10_000 / max(1, n_dossiers)
    print(f"# {n_dossiers} dossiers, {n_invoices} invoices ({erps['seconds']:.1f} s to seed); invoice buckets: "
          f"{out['buckets']}")
    print(f"# dossier path {dossier_path:.1f} s (extract {t_extract:.1f}, gate {t_gate_total - t_gate_invoices:.1f}, "
          f"plan+send+states {t_send_dossiers:.1f}); invoice cycle {cycle:.1f} s (stage {t_stage:.1f}, "
          f"gate {t_gate_invoices:.1f}, send {t_send:.1f}, follow to paid {t_follow:.1f}: "
          f"{follow['changes']} state changes, {follow['requests']} requests)")
    print(f"invoice_cycle_10k_seconds: {per10k_inv:.1f}")
    print(f"dossier_path_10k_seconds: {per10k_dos:.1f}")
    print(f"invoice_cycle_to_dossier_path_ratio: {per10k_inv / per10k_dos:.2f}")
    print(f"invoice_cycle_duplicates: {dups}")


if __name__ == "__main__":
    main()
