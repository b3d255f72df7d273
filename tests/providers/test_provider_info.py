"""The provider's metadata: valid for Airflow's schema and registered through the entry point,
so the UI's connection form knows the ``opco`` type and its fields."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema

import airflow
from cfa_opco.providers.opco import get_provider_info
from cfa_opco.providers.opco.connections import parse_connection
from cfa_opco.providers.opco.norm import CONN_TYPE


def test_provider_info_is_valid_for_airflows_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == CONN_TYPE == "opco"
    assert {"siren", "oauth_client_id", "oauth_client_secret", "read_timeout"} <= set(conn["conn-fields"])
    assert conn["conn-fields"]["oauth_client_secret"]["schema"]["format"] == "password"


def test_the_entry_point_points_at_get_provider_info():
    (ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("cfa_opco")]
    assert ep.load() is get_provider_info


def test_providers_manager_registers_the_opco_connection_type():
    # A fresh interpreter: ProvidersManager caches what it discovered.
    code = ("from airflow.providers_manager import ProvidersManager as P; p = P(); "
            "import json; h = p.hooks.get('opco'); w = p.connection_form_widgets; "
            "print(json.dumps({'hook': h.hook_class_name if h else None, "
            "'fields': sorted(k for k in w if k.startswith('extra__opco__')), "
            "'behaviour': p.field_behaviours.get('opco')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["hook"] == "cfa_opco.providers.opco.hooks.opco.OpcoHook"
    assert "extra__opco__siren" in got["fields"] and "extra__opco__read_timeout" in got["fields"]
    assert "login" in got["behaviour"]["hidden_fields"]


class _Conn:
    def __init__(self, extra: dict):
        self.host, self.schema, self.port, self.password = "http://127.0.0.1:1/akto/ApiEchangeCFA", None, None, "k"
        self.extra_dejson = extra


def test_form_fields_stored_with_the_ui_prefix_are_read_like_bare_extras():
    prefixed = parse_connection(_Conn({"extra__opco__siren": "775672272", "extra__opco__read_timeout": 2,
                                       "extra__opco__proxy": ""}), "opco_akto_775672272")
    bare = parse_connection(_Conn({"siren": "775672272", "read_timeout": 2}), "opco_akto_775672272")
    assert prefixed.siren == bare.siren == "775672272"
    assert prefixed.read_timeout == bare.read_timeout == 2.0
    assert prefixed.proxy is None
