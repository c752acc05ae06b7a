"""``FlowDef``: what ``@flow`` returns — the function, its blueprint and how to run it."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from ..blueprint._model import Blueprint
    from ..engine._result import RunResult
    from ..testing import Simulation
    from ._compiler import CompiledFlow
    from ._evaluator import FlowEvaluator

P = ParamSpec("P")
R = TypeVar("R")


class FlowDef(Generic[P, R]):
    """A compiled ``@flow``: still the plain async function, plus its blueprint.

    Calling it runs the function as plain Python (``await checkout("A1")``);
    awaiting it inside another flow starts it as a subflow. The body is
    compiled at decoration time; when it uses a name that is not defined yet
    (a node further down the module), compiling finishes on first use of
    :attr:`blueprint`.

    >>> from flowkit.dsl._flow import flow
    >>> @flow(id="hello", version=2)
    ... async def hello(name: str) -> str:
    ...     return f"hello {name}"
    >>> hello.blueprint.id, hello.version
    ('hello', 2)
    """

    __flowkit_flowdef__ = True

    def __init__(
        self,
        fn: Callable[P, Coroutine[Any, Any, R]],
        *,
        id: str | None = None,
        version: int = 1,
    ) -> None:
        self.fn = fn
        self.id: str = id or fn.__name__
        self.version = version
        functools.update_wrapper(self, fn)
        from ._compiler import compile_flow  # imported on first use: keeps `import flowkit` fast

        self._compiled: CompiledFlow | None = compile_flow(
            fn, flow_id=self.id, version=version, final=False
        )

    # -- the compiled form ----------------------------------------------------
    def _compile(self) -> CompiledFlow:
        if self._compiled is None:
            from ._compiler import compile_flow

            compiled = compile_flow(self.fn, flow_id=self.id, version=self.version, final=True)
            assert compiled is not None
            self._compiled = compiled
        return self._compiled

    @property
    def blueprint(self) -> Blueprint:
        """The validated blueprint the body compiles to."""
        return self._compile().blueprint

    @property
    def registry(self) -> dict[str, Any]:
        """Implementation name -> callable for every node the blueprint calls."""
        return self._compile().registry

    @property
    def evaluator(self) -> FlowEvaluator:
        """Evaluates the blueprint's expressions with the flow's name resolution."""
        return self._compile().evaluator

    @property
    def children(self) -> tuple[Any, ...]:
        """The flows this flow starts as subflows."""
        return self._compile().children

    # -- running --------------------------------------------------------------
    async def run(self, **inputs: Any) -> RunResult:
        """Run in-memory on a fresh :class:`~flowkit.Runtime`; ``run_id=`` is reserved.

        >>> # result = await checkout.run(order_id="A1"); result.output
        """
        from ..engine._runtime import Runtime

        self.check_inputs({k: v for k, v in inputs.items() if k != "run_id"})
        return await Runtime().run(self, **inputs)

    def run_sync(
        self, *, backend: Literal["asyncio", "trio"] = "asyncio", **inputs: Any
    ) -> RunResult:
        """:meth:`run` from synchronous code (starts an event loop on ``backend``)."""
        return anyio.run(functools.partial(self.run, **inputs), backend=backend)

    def simulate(self, **options: Any) -> Simulation:
        """Run on virtual time with mocks, scripted signals and faults: see
        :func:`flowkit.testing.simulate` (inputs are keyword arguments too)."""
        from ..testing import simulate

        return simulate(self, **options)

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        """Raise ``TypeError`` when ``inputs`` do not fit the flow's parameters."""
        self.bind_inputs(inputs)

    def bind_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The flow's parameters bound from ``inputs``, defaults applied (like a call).

        Raises ``TypeError`` naming the flow when an input is missing or unknown.
        """
        try:
            bound = inspect.signature(self.fn).bind(**inputs)
        except TypeError as exc:
            raise TypeError(f"flow {self.id!r}: {exc}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Run the body as plain Python (``flow.gather/first/map`` work there too)."""
        return self.fn(*args, **kwargs)

    # -- display --------------------------------------------------------------
    def mermaid(self) -> str:
        """Mermaid flowchart of the blueprint."""
        return self.blueprint.mermaid()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return self.blueprint._repr_mimebundle_(include, exclude)

    def __repr__(self) -> str:
        return f"<flow {self.id} v{self.version}>"
