"""Reading a run's batch (``staged_dossier``) into a DataFrame: only the columns the rules
and the reports read, through one COPY (no per-row Python)."""
from __future__ import annotations

import io

import pandas as pd

from cfa_opco.dossier.model import BY_NAME
from cfa_opco.quality.rules import NEEDED_COLUMNS


def load_batch(conn, run_id: str, columns=None) -> pd.DataFrame:
    cols = list(columns or NEEDED_COLUMNS)
    extra = ["content_hash"]
    buf = io.StringIO()
    with conn.cursor() as cur:
        cur.copy_expert(
            "COPY (SELECT {} FROM staged_dossier WHERE run_id = {} ORDER BY source_id, numero_interne) "
            "TO STDOUT WITH (FORMAT csv, HEADER true)".format(
                ", ".join(cols + extra), conn.cursor().mogrify("%s", (run_id,)).decode()), buf)
    buf.seek(0)
    dtypes = {}
    for c in cols:
        t = BY_NAME[c].type
        dtypes[c] = {"int": "float64", "num": "float64"}.get(t, "str")
    dtypes["content_hash"] = "str"
    df = pd.read_csv(buf, dtype=dtypes, keep_default_na=False, na_values=[""])
    for c in cols:
        if BY_NAME[c].type == "bool":
            df[c] = df[c].map({"t": True, "f": False}).fillna(False).astype(bool)
    return df
