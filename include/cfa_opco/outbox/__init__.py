"""The outbox: every exchange with an OPCO sent exactly once, behind a ledger.

- :mod:`.operations` — each kind of exchange (dossier, avenant, pièce, rupture...) declared
  as a small unit: payload from a frozen batch row, business key, routes, how an attempt is
  read, how a lost answer is settled, which state route follows;
- :mod:`.ledger` — the SQL: intent before sending, outcome after, what an outcome changes;
- :mod:`.policy` — the decisions, as pure functions (fate of a row, backoffs, messages);
- :mod:`.runner` — one runner drives a batch for any operation (pacing, concurrency, retries,
  in-doubt settlement) through a :mod:`.delay_queue`, fed by a :mod:`.flow`: :class:`OnceFlow`
  (one exchange per row) or :mod:`.dossier_batch` (contracts, avenants, documents, ruptures);
- :mod:`.planning` — routing a run into (OPCO, key) batches; :mod:`.settle` — what was left in doubt.

See docs/outbox.md (adding an operation: a worked example).
"""
from .planning import plan, planned_batches
from .dossier_batch import DossierBatch, waiting_reasons
from .flow import Flow, OnceFlow
from .runner import BatchRunner, transmit_batch
from .settle import in_doubt_count, settle_in_doubt
from .status import Status

__all__ = ["BatchRunner", "DossierBatch", "Flow", "OnceFlow", "Status", "in_doubt_count", "plan", "planned_batches", "settle_in_doubt",
           "transmit_batch", "waiting_reasons"]
