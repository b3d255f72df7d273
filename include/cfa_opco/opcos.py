"""The eleven OPCOs' codes (cheap: DAG files use it). See providers.opco.norm."""
from __future__ import annotations

from cfa_opco.providers.opco.norm import OPCO_CODES


def opco_codes() -> tuple[str, ...]:
    return OPCO_CODES
