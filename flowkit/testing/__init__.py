"""Testing workflows: ``simulate()`` on virtual time, fault injection, fixtures, strategies."""

from ._capture import capture_events as capture_events
from ._faults import Faults as Faults
from ._model import Call as Call
from ._model import Simulation as Simulation
from ._model import SimulationError as SimulationError
from ._model import TraceEntry as TraceEntry
from ._model import UpdateOutcome as UpdateOutcome
from ._model import at as at
from ._model import never as never
from ._schedule_sim import ScheduleSimulation as ScheduleSimulation
from ._simulate import simulate as simulate
from ._simulate import simulate_async as simulate_async

__all__ = [
    "Call",
    "Faults",
    "ScheduleSimulation",
    "Simulation",
    "SimulationError",
    "TraceEntry",
    "UpdateOutcome",
    "at",
    "capture_events",
    "never",
    "simulate",
    "simulate_async",
]
