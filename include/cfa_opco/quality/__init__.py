"""Quality gate of the extracted dossiers (Great Expectations 1.x), quarantine and reports.

Entry points (importing them does not import great_expectations):

- :func:`cfa_opco.quality.gate.run_quality_gate` — check a run's batch, store verdicts
- :func:`cfa_opco.quality.gate.force_dossiers` — force quarantined dossiers through
- :func:`cfa_opco.quality.gate.transmittable_numeros` / ``quarantined_numeros``
- view ``dossier_to_transmit(run_id, source_id, numero_interne, ...)`` in the connector DB
"""
