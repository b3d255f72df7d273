"""OPCO sandbox: a local HTTP server of the API CFA-OPCO norm for the eleven OPCOs.

    python -m cfa_opco.sandbox --port 8085 --config config/sandbox.yaml --db var/sandbox/opco.db

See docs/sandbox.md. ``cfa_opco.sandbox.testing.run_sandbox`` starts it in a subprocess
for tests and benchmarks."""
from .config import OPCO_CODES, load_config  # noqa: F401
from .seed import sample_dossier, seed_dossiers, siret_for  # noqa: F401


def create_app(*args, **kwargs):
    from .app import create_app as _create  # lazy: FastAPI (~0.8 s) only to serve; the seed helpers need none
    return _create(*args, **kwargs)
