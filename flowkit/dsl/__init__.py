"""Declaring work: the ``Flow`` builder (and, with the compiler, ``@flow`` / ``@node``)."""

from ._builder import Flow as Flow

__all__ = ["Flow"]
