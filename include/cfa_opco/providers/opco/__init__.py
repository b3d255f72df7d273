"""OPCO provider family: the client side of the API CFA-OPCO norm.

- :mod:`.capabilities` — which OPCO serves which route (read from opco_capabilities.yaml)
- :mod:`.exceptions`   — OpcoError, OpcoAuthError, OpcoRouteNotServed, OpcoUnavailable
- :mod:`.hooks.opco`   — OpcoHook (connections, auth, retries, pacing, proofs)
- :mod:`.proofs`       — canonical JSON, ExchangeRecord, ProofRecorder, proof bundles
- :mod:`.triggers.opco_states` — OpcoStateChangeTrigger (deferrable wait)
- :mod:`.sensors.opco_states`  — OpcoDecisionSensor

Nothing heavy is imported here: DAG files may import this package cheaply.
"""
from .norm import CONN_TYPE


def get_provider_info() -> dict:
    """Provider metadata read by Airflow's ProvidersManager through the
    ``apache_airflow_provider`` entry point (pyproject.toml): registers the ``opco``
    connection type with its form fields, so the UI's connection form asks for the SIREN,
    AKTO's OAuth2 client and the timeouts instead of a bare HTTP connection's fields."""
    hook = "cfa_opco.providers.opco.hooks.opco.OpcoHook"

    def text(label: str, description: str, **schema) -> dict:
        return {"label": label, "description": description,
                "schema": {"type": ["string", "null"], **schema}}

    def number(label: str, description: str) -> dict:
        return {"label": label, "description": description, "schema": {"type": ["number", "null"]}}

    return {
        "package-name": "cfa-opco",
        "name": "OPCO (API CFA-OPCO)",
        "description": "Hook, operator, sensor and trigger for the API CFA-OPCO exchange norm "
                       "(apprenticeship dossiers from CFAs to the eleven OPCOs).",
        "versions": ["0.1.0"],
        "connection-types": [{
            "connection-type": CONN_TYPE,
            "hook-class-name": hook,
            "hook-name": "OPCO (API CFA-OPCO)",
            "ui-field-behaviour": {
                "hidden-fields": ["schema", "login", "port"],
                "relabeling": {"host": "URL de base (…/ApiEchangeCFA)", "password": "Clé API (X-API-KEY)"},
                "placeholders": {"host": "https://api.opco.example/ApiEchangeCFA"},
            },
            "conn-fields": {
                "siren": text("SIREN du CFA", "SIREN to which the OPCO issued this key (9 digits).",
                              pattern="^[0-9]{9}$"),
                "opco": text("Code OPCO", "akto, atlas, afdas... (default: read from the id opco_<code>_<siren>)."),
                "oauth_client_id": text("OAuth2 client id", "AKTO only: client of the token endpoint."),
                "oauth_client_secret": text("OAuth2 client secret", "AKTO only.", format="password"),
                "oauth_token_path": text("OAuth2 token path", "AKTO only: path of the token endpoint."),
                "connect_timeout": number("Connect timeout (s)", "Default 3 s."),
                "read_timeout": number("Read timeout (s)",
                                       "Default 5 s: a held answer is read back, not waited for."),
                "rate_limit_per_second": number("Requests per second", "This key's rate limit."),
                "proxy": text("Proxy", "http(s)://host:port of an outgoing proxy, if any."),
            },
        }],
        "hooks": [{"integration-name": "OPCO (API CFA-OPCO)",
                   "python-modules": ["cfa_opco.providers.opco.hooks.opco",
                                      "cfa_opco.providers.opco.hooks.opco_async"]}],
        "operators": [{"integration-name": "OPCO (API CFA-OPCO)",
                       "python-modules": ["cfa_opco.providers.opco.operators.transmit"]}],
        "sensors": [{"integration-name": "OPCO (API CFA-OPCO)",
                     "python-modules": ["cfa_opco.providers.opco.sensors.opco_states"]}],
        "triggers": [{"integration-name": "OPCO (API CFA-OPCO)",
                      "python-modules": ["cfa_opco.providers.opco.triggers.opco_states"]}],
    }

