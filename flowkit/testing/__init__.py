"""Testing workflows: ``simulate()`` on virtual time, fault injection, ``replay()`` of
recorded runs, fixtures, strategies."""

from ._capture import capture_events as capture_events
from ._faults import Faults as Faults
from ._model import Call as Call
from ._model import Simulation as Simulation
from ._model import SimulationError as SimulationError
from ._model import TraceEntry as TraceEntry
from ._model import UpdateOutcome as UpdateOutcome
from ._model import at as at
from ._model import never as never
from ._replay import Divergence as Divergence
from ._replay import ReplayResult as ReplayResult
from ._replay import replay as replay
from ._replay import replay_async as replay_async
from ._schedule_sim import ScheduleSimulation as ScheduleSimulation
from ._simulate import simulate as simulate
from ._simulate import simulate_async as simulate_async

__all__ = [
    "Call",
    "Divergence",
    "Faults",
    "ReplayResult",
    "ScheduleSimulation",
    "Simulation",
    "SimulationError",
    "TraceEntry",
    "UpdateOutcome",
    "at",
    "capture_events",
    "never",
    "replay",
    "replay_async",
    "simulate",
    "simulate_async",
]
