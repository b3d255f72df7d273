"""Helpers of the outbox's tests."""
from __future__ import annotations

from cfa_opco.opcos import opco_codes
from cfa_opco.outbox import plan, transmit_batch

RUN = "manual__test"


def creations(sbx) -> dict[str, int]:
    total: dict[str, int] = {}
    for code in opco_codes():
        for numero, n in sbx.creations(code)["creations"].items():
            total[numero] = total.get(numero, 0) + n
    return total


def transmit_all(ctx, run=RUN, opcos=None, **kw) -> dict:
    planned = plan(run, ctx["connector"])
    out = {}
    for code, batches in planned["batches"].items():
        if opcos and code not in opcos:
            continue
        for b in batches:
            out[b["conn_id"]] = transmit_batch(run, ctx["connector"], b["conn_id"],
                                               max_workers=4, retry_base=0.01, **kw)
    return {"plan": planned, "batches": out}


