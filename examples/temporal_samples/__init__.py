"""Temporal's samples, written with flowkit: one module per sample (see README.md).

``python -m examples.temporal_samples`` runs every sample's client code in-memory;
``python -m flowkit.worker --app examples.temporal_samples.signals`` (one ``--app``
per sample) serves them on workers.
"""
