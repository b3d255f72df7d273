"""French identifiers as the ERP types them: making valid ones (and, for the seeded
defects, realistically wrong ones). Validation lives in the quality gate, through
python-stdnum; the generator only needs the key computations below.
"""
from __future__ import annotations

from stdnum import luhn
from stdnum.fr import nir as stdnum_nir

UAI_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # the alphabet without I, O and Q
LA_POSTE_SIREN = "356000000"


def siren_from(eight_digits: str) -> str:
    return eight_digits + luhn.calc_check_digit(eight_digits)


def siret_from(siren: str, nic4: str) -> str:
    """SIRET = SIREN + NIC, the NIC's last digit making the whole number Luhn-valid."""
    body = siren + nic4
    if siren == LA_POSTE_SIREN:
        # La Poste's establishments: digit sum divisible by 5 instead of a Luhn key
        total = sum(int(d) for d in body)
        return body + str((5 - total % 5) % 5)
    return body + luhn.calc_check_digit(body)


def uai_from(seven_digits: str) -> str:
    return seven_digits + UAI_LETTERS[int(seven_digits) % 23]


def nir_from(sexe: str, birth_year: int, birth_month: int, departement: str,
             commune: str, ordre: int) -> str:
    body = (("1" if sexe == "M" else "2") + f"{birth_year % 100:02d}{birth_month:02d}"
            + departement[:2].rjust(2, "0") + commune.rjust(3, "0")[:3] + f"{ordre:03d}")
    return body + stdnum_nir.calc_check_digits(body)


def with_wrong_luhn_key(siret: str) -> str:
    """Same SIRET with its last digit changed so that the key no longer checks out."""
    for delta in range(1, 10):
        candidate = siret[:-1] + str((int(siret[-1]) + delta) % 10)
        if not luhn.is_valid(candidate):
            return candidate
    raise AssertionError("unreachable")
