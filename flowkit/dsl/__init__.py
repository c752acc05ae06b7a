"""Declaring work: ``@flow``, ``@node`` and the ``Flow`` builder."""

from ._builder import Flow as Flow
from ._flow import flow as flow
from ._flowdef import FlowDef as FlowDef
from ._node import NodeDef as NodeDef
from ._node import node as node

__all__ = ["Flow", "FlowDef", "NodeDef", "flow", "node"]
