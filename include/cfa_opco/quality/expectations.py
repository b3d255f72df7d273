"""The Great Expectations layer (GX 1.x, used directly).

One expectation suite per domain — ``entreprise``, ``apprenant``, ``session``,
``etablissement`` (the four reference domains, deduplicated) and ``contrat`` — run on the
prepared domain frames of :mod:`cfa_opco.quality.rules` (five batches per run).

Every rule is one expectation of the custom type :class:`ExpectRowsToPassCfaRule`, a
``MulticolumnMapExpectation`` whose registered metric (``multicolumn_values.cfa_rule``)
calls the very function the plain-pandas path calls (``Rule.fails``), so the two can
never disagree. ``CHAMP_OBLIGATOIRE`` checks use GX's own
``ExpectColumnValuesToNotBeNull``. Results are collected with ``COMPLETE`` format but
without unexpected rows or index queries: only the failing row positions come back.

Importing this module imports great_expectations (2–4 s): it is imported inside
functions by the gate, never at module top level of anything a DAG imports.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cfa_opco.quality import rules as R

log = logging.getLogger(__name__)

import great_expectations as gx  # noqa: E402  (this module is only imported lazily)
from great_expectations.compatibility import pydantic  # noqa: E402
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.execution_engine import PandasExecutionEngine  # noqa: E402
from great_expectations.expectations.expectation import MulticolumnMapExpectation  # noqa: E402
from great_expectations.expectations.metrics.map_metric_provider import (  # noqa: E402
    MulticolumnMapMetricProvider,
)
from great_expectations.expectations.metrics.map_metric_provider.multicolumn_condition_partial import (  # noqa: E402
    multicolumn_condition_partial,
)


class MulticolumnValuesCfaRule(MulticolumnMapMetricProvider):
    """Row-wise: does the record pass the dossier rule ``rule_id``?"""

    condition_metric_name = "multicolumn_values.cfa_rule"
    condition_domain_keys = ("batch_id", "table", "column_list", "row_condition", "condition_parser",
                             "ignore_row_if")
    condition_value_keys = ("rule_id",)

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list, rule_id, **kwargs):
        return ~R.rule_by_id(rule_id).fails(column_list).fillna(False).astype(bool)


class ExpectRowsToPassCfaRule(MulticolumnMapExpectation):
    """Expect every record of the domain to pass one rule of the apprenticeship dossier
    (cfa_opco.quality.rules): identifiers (SIRET Luhn/La Poste, UAI key, NIR), IDCC→OPCO,
    RNCP catalogue, ages, dates and durations, pay grid against the dated SMIC, amendments."""

    rule_id: str = pydantic.Field(description="id of the rule in cfa_opco.quality.rules")
    ignore_row_if: str = "never"
    map_metric = "multicolumn_values.cfa_rule"
    success_keys = ("mostly", "rule_id")
    args_keys = ("column_list", "rule_id")


def _result_format() -> dict:
    """The failing rows' positions only: the values themselves (NIRs, birth dates, any text a
    CFA typed) never enter a validation result, so Great Expectations' Data Docs cannot show
    them; the project's reports show each value, masked (quality.rules.build_anomalies)."""
    return {"result_format": "COMPLETE", "partial_unexpected_count": 5, "include_unexpected_rows": False,
            "exclude_unexpected_values": True, "return_unexpected_index_query": False}


def build_suite(domain: str, rules: list[R.Rule], severities: dict[str, str]):
    """The ExpectationSuite of one domain (not yet attached to a context)."""
    suite = gx.ExpectationSuite(name=f"cfa_opco_{domain}")
    for r in rules:
        meta = {"rule_id": r.id, "rule_code": r.code, "severity": severities.get(r.code, "error"),
                "champ": r.field, "notes": r.title}
        if r.code == "CHAMP_OBLIGATOIRE" or r.code == "APPRENTI_NIR_MANQUANT":
            exp = gx.expectations.ExpectColumnValuesToNotBeNull(column=r.field, meta=meta,
                                                                 description=f"{r.code} — {r.title}")
        else:
            cols = list(dict.fromkeys(r.inputs))
            if len(cols) < 2:
                cols.append(R.DOMAIN_KEYS.get(domain, "numero_interne"))
            exp = ExpectRowsToPassCfaRule(column_list=cols, rule_id=r.id, meta=meta,
                                          description=f"{r.code} — {r.title}")
        suite.add_expectation(exp)
    return suite


class GxRunner:
    """An ephemeral GX context with one pandas data source, one dataframe asset and one
    validation definition per domain (reused across runs of the same process)."""

    def __init__(self, data_docs_dir: Path | None = None):
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.source = self.context.data_sources.add_pandas("cfa_opco_batch")
        self.data_docs_dir = data_docs_dir
        if data_docs_dir is not None:
            self.context.add_data_docs_site(
                site_name="cfa_opco_quality",
                site_config={"class_name": "SiteBuilder",
                             "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                               "base_directory": str(data_docs_dir)},
                             "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
        self.checkpoints = {}

    def _checkpoint(self, domain: str, rules: list[R.Rule], severities: dict[str, str]):
        asset = self.source.add_dataframe_asset(name=domain)
        bd = asset.add_batch_definition_whole_dataframe(f"{domain}_batch")
        suite = self.context.suites.add(build_suite(domain, rules, severities))
        vd = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"cfa_opco_{domain}", data=bd, suite=suite))
        cp = self.context.checkpoints.add(gx.Checkpoint(
            name=f"cfa_opco_{domain}", validation_definitions=[vd], actions=[],
            result_format=_result_format()))
        return cp

    def validate(self, batch: R.Batch, rules: list[R.Rule], severities: dict[str, str],
                 run_name: str = "cfa_opco") -> tuple[dict[str, np.ndarray], dict]:
        """Run the five suites; return (rule id -> failing positions, per-domain statistics)."""
        failing: dict[str, np.ndarray] = {}
        stats = {}
        for domain in R.DOMAINS:
            domain_rules = [r for r in rules if r.domain == domain]
            if not domain_rules:
                continue
            got, stats[domain] = self.validate_frame(domain, batch.frames[domain], domain_rules, severities,
                                                     run_name)
            failing.update(got)
        return failing, stats

    def validate_frame(self, domain: str, frame, rules: list[R.Rule], severities: dict[str, str],
                       run_name: str = "cfa_opco") -> tuple[dict[str, np.ndarray], dict]:
        """Run one domain's suite (``cfa_opco_<domain>``) on a prepared frame; return (rule id ->
        failing positions, its statistics). Another record kind's suite (the invoices) uses it too."""
        cp = self.checkpoints.get(domain)
        if cp is None:
            cp = self.checkpoints[domain] = self._checkpoint(domain, rules, severities)
        failing: dict[str, np.ndarray] = {}
        stats: dict = {}
        res = cp.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=f"{run_name}"))
        for vr in res.run_results.values():
            stats = {"evaluated": vr.statistics.get("evaluated_expectations"),
                     "successful": vr.statistics.get("successful_expectations"), "records": len(frame)}
            for er in vr.results:
                rid = er.expectation_config.meta["rule_id"]
                if er.exception_info and er.exception_info.get("raised_exception"):
                    raise RuntimeError(f"expectation {rid} failed to run: "
                                       f"{er.exception_info.get('exception_message')}")
                idx = er.result.get("unexpected_index_list") or []
                failing[rid] = np.asarray(idx, dtype="int64")
        return failing, stats

    def build_data_docs(self) -> Path | None:
        if self.data_docs_dir is None:
            return None
        self.context.build_data_docs(site_names=["cfa_opco_quality"])
        return self.data_docs_dir / "index.html"
