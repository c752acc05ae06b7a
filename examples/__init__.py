"""Runnable flowkit examples: ``python -m examples.orders`` (or ``etl``, ``agent``).

Each example is a package whose ``flows`` module a worker can serve
(``python -m flowkit.worker --app examples.orders.flows``) and whose
``__main__`` runs it in-memory end to end. ``examples.temporal_samples`` holds
flowkit versions of Temporal's samples, one module each (see its README).
"""
