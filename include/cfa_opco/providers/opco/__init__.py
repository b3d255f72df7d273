"""OPCO provider family: the client side of the API CFA-OPCO norm.

- :mod:`.capabilities` — which OPCO serves which route (read from opco_capabilities.yaml)
- :mod:`.exceptions`   — OpcoError, OpcoAuthError, OpcoRouteNotServed, OpcoUnavailable
- :mod:`.hooks.opco`   — OpcoHook (connections, auth, retries, pacing, proofs)
- :mod:`.proofs`       — canonical JSON, ExchangeRecord, ProofRecorder, proof bundles
- :mod:`.triggers.opco_states` — OpcoStateChangeTrigger (deferrable wait)
- :mod:`.sensors.opco_states`  — OpcoDecisionSensor

Nothing heavy is imported here: DAG files may import this package cheaply.
"""
