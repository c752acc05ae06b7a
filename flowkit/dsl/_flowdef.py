"""``FlowDef``: what ``@flow`` returns — the function, its blueprint and how to run it."""

from __future__ import annotations

import functools
import inspect
import typing
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeAlias, TypeVar, overload

import anyio

from .._errors import ConfigurationError, InvalidInputs
from ._handlers import Handlers

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from ..blueprint._model import Blueprint
    from ..runtime._runtime import DefaultRuntime
    from ..shell._limits import Limit
    from ..shell._result import RunResult
    from ..shell._schedules import Schedule
    from ..testing import Simulation
    from ._compiler import CompiledFlow
    from ._evaluator import FlowEvaluator

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound="Callable[..., Any]")
Validator: TypeAlias = "Callable[[dict[str, Any], Any], Any]"


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
        schedule: str | None = None,
        timezone: str | None = None,
        concurrency: Limit | None = None,
    ) -> None:
        from ._node import check_flow_arguments

        self.concurrency = check_flow_arguments(fn, id, version, concurrency)
        """The :class:`~flowkit.Limit` on the flow's runs (``@flow(concurrency=...)``)."""
        self.fn = fn
        self._hints: dict[str, Any] | None = None
        self._signature: inspect.Signature | None = None
        self.id: str = id or fn.__name__
        self.version = version
        self.schedule = self._schedule(schedule, timezone)
        """The :class:`~flowkit.Schedule` of ``@flow(schedule=...)`` (its id is the flow's),
        which a Runtime or Worker the flow is registered on runs; None without one."""
        functools.update_wrapper(self, fn)
        self._handlers = Handlers(self.id)
        from ._compiler import compile_flow  # imported on first use: keeps `import flowkit` fast

        self._compiled: CompiledFlow | None = compile_flow(
            fn, flow_id=self.id, version=version, final=False, concurrency=self._limit()
        )

    def _schedule(self, cron: str | None, timezone: str | None) -> Schedule | None:
        if cron is None:
            if timezone is not None:
                raise ConfigurationError(
                    f"@flow {self.id!r}: timezone= needs schedule='<cron expression>'"
                )
            return None
        from ..shell._schedules import Schedule

        return Schedule(self, cron=cron, timezone=timezone)

    def _limit(self) -> dict[str, Any] | None:
        """The blueprint's ``concurrency`` metadata (None: the runs are not limited)."""
        limit = self.concurrency
        return None if limit is None else {"max": limit.max, "key": limit.key}

    # -- the compiled form ----------------------------------------------------
    def _compile(self) -> CompiledFlow:
        if self._compiled is None:
            from ._compiler import compile_flow

            compiled = compile_flow(
                self.fn,
                flow_id=self.id,
                version=self.version,
                final=True,
                concurrency=self._limit(),
            )
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

    # -- queries and updates --------------------------------------------------
    @property
    def queries(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """Query name -> handler, as declared with :meth:`query`."""
        return self._handlers.queries

    @property
    def updates(self) -> dict[str, Any]:
        """Update name -> its reply and validator, as declared with :meth:`update`."""
        return self._handlers.updates

    @overload
    def query(self, fn: H, /) -> H: ...
    @overload
    def query(self, fn: None = None, /, *, name: str | None = None) -> Callable[[H], H]: ...
    def query(self, fn: Any = None, /, *, name: str | None = None) -> Any:
        """Declare a read-only query of this flow's runs: ``fn(vars)`` gets the run's flow
        variables as stored (``RunResult.state``, a copy) and returns the answer.

        ``rt.query(run_id, "name")`` and ``client.query(...)`` call it, in the process
        that asks, on a run that is running, awaiting or finished. Bare or called
        (``name=`` defaults to the function's name); returns ``fn`` unchanged.

        >>> # @cart.query
        >>> # def contents(vars: dict) -> list[str]:
        >>> #     return vars["items"]
        """

        def declare(fn: H) -> H:
            self._handlers.query(fn, name)
            return fn

        return declare(fn) if fn is not None else declare

    @overload
    def update(self, fn: H, /) -> H: ...
    @overload
    def update(
        self, fn: None = None, /, *, name: str | None = None, validator: Validator | None = None
    ) -> Callable[[H], H]: ...
    def update(
        self,
        fn: Any = None,
        /,
        *,
        name: str | None = None,
        validator: Validator | None = None,
    ) -> Any:
        """Declare an update: a signal for the flow's ``flow.wait(name)`` that answers.

        ``validator(vars, data)``, if given, runs on the run's variables as stored just
        before the signal is recorded, and raises to refuse it (the caller gets
        :class:`~flowkit.UpdateRejected`, the run records nothing). ``fn(vars, data)``
        computes the reply from the variables once the flow has taken the payload and
        reached its next wait, or finished. Bare or called (``name=`` defaults to the
        function's name); returns ``fn`` unchanged.

        >>> # @cart.update(validator=in_stock)
        >>> # def add_item(vars: dict, item: str) -> int:
        >>> #     return len(vars["items"])
        """

        def declare(fn: H) -> H:
            self._handlers.update(fn, name, validator)
            return fn

        return declare(fn) if fn is not None else declare

    # -- running --------------------------------------------------------------
    async def run(self, **inputs: Any) -> RunResult:
        """Run in this process until the run completes, fails or pauses; ``run_id=`` is reserved.

        A run that pauses (``awaiting``: a wait, a webhook, a sleep) stays in
        this process's memory until it finishes, on whichever event loop a later
        call runs: resume it with :meth:`signal`, see it through its sleeps with
        :meth:`wait` (its ``resume_hint`` says which). Runs that must survive
        the process need ``flowkit.Runtime(store=...)``.

        >>> # result = await checkout.run(order_id="A1")   # awaiting ('approval',)
        >>> # result = await checkout.signal(result.run_id, "approval", {"approved": True})
        >>> # result = await checkout.wait(result.run_id)  # through its ten-minute sleep
        """
        from ..runtime._runtime import default_runtime

        return await default_runtime().run(self, **inputs)

    async def start(self, *, run_id: str, detach: bool = False, **inputs: Any) -> str:
        """In a flow body: start a run of this flow as a child with id ``run_id`` and go on
        without waiting for it; the value is ``run_id``.

        ``detach`` is the child's cancellation policy: ``False`` (the default) cancels it
        when its parent finishes, if it is still going; ``True`` leaves it running. Outside
        a flow body, start runs with ``Runtime.start`` or ``Client.start``.
        """
        raise RuntimeError(
            f"{self.id}.start(run_id=...) starts a child run inside a flow body only; "
            "outside one, use `await runtime.start(flow, run_id=...)` or Client.start"
        )

    start.__flowkit_primitive__ = "start_child"  # type: ignore[attr-defined]

    def run_sync(
        self, *, backend: Literal["asyncio", "trio"] = "asyncio", **inputs: Any
    ) -> RunResult:
        """:meth:`run` from synchronous code (starts an event loop on ``backend``).

        A run it leaves paused is resumed the same way, e.g.
        ``anyio.run(checkout.signal, run_id, "approval", {"approved": True})``.
        """
        return anyio.run(functools.partial(self.run, **inputs), backend=backend)

    async def signal(
        self, run_id: str, name: str, data: Any = None, *, action: str | None = None
    ) -> RunResult:
        """Deliver signal ``name`` to a run :meth:`run` left awaiting.

        Returns the run's result once it has advanced as far as it can: it may
        pause again, e.g. in a durable sleep (see :meth:`wait`). A signal for a
        wait inside a subflow is routed there. Raises :class:`~flowkit.ResumeError`
        for a run this process does not keep, a run of another flow, or a name
        no wait of the flow uses.

        >>> # result = await checkout.run(order_id="A1")
        >>> # result = await checkout.signal(result.run_id, "approval", {"approved": True})
        """
        runtime = self._runtime_of(run_id)
        return await runtime.signal(run_id, name, data, action=action)

    async def wait(self, run_id: str, *, timeout: float | None = None) -> RunResult:
        """Wait until a run of :meth:`run` is completed, failed or cancelled.

        Its durable timers (sleeps, wait timeouts) fire while this waits, as
        they fall due. Raises ``TimeoutError`` after ``timeout`` seconds.

        >>> # result = await checkout.signal(run_id, "approval", {"approved": True})
        >>> # result = await checkout.wait(run_id, timeout=3600)   # sleeps ten minutes
        >>> # result.output
        """
        return await self._runtime_of(run_id).wait(run_id, timeout)

    async def result(self, run_id: str) -> RunResult:
        """The current result (any status) of a run of :meth:`run`.

        >>> # (await checkout.result(run_id)).status
        """
        return await self._runtime_of(run_id).result(run_id)

    async def cancel(self, run_id: str) -> RunResult:
        """Cancel a run of :meth:`run`: its nodes in flight are cancelled, it ends ``cancelled``.

        >>> # result = await checkout.cancel(run_id)   # nobody will approve it
        """
        return await self._runtime_of(run_id).cancel(run_id)

    def _runtime_of(self, run_id: str) -> DefaultRuntime:
        """This event loop's default runtime, checked to keep ``run_id`` as a run of this flow."""
        from ..runtime._runtime import default_runtime

        runtime = default_runtime()
        runtime.check_run_of(run_id, self.id)
        return runtime

    def simulate(self, **options: Any) -> Simulation:
        """Run on virtual time with mocks, scripted signals and faults: see
        :func:`flowkit.testing.simulate` (inputs are keyword arguments too)."""
        from ..testing import simulate

        return simulate(self, **options)

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        """Raise :class:`~flowkit.InvalidInputs` (a ``TypeError``) naming every input that
        is missing, unknown, not of its parameter's declared type, or not storable as JSON."""
        from ..shell._inputs import check_flow_inputs

        check_flow_inputs(self.id, self.fn, self._input_hints(), inputs)

    def bind_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The flow's parameters bound from ``inputs``, defaults applied (like a call).

        Raises :class:`~flowkit.InvalidInputs` naming each input that is missing or unknown.
        """
        from ..shell._inputs import arity_problems

        if self._signature is None:
            self._signature = inspect.signature(self.fn)
        signature = self._signature
        problems = arity_problems(signature, inputs)
        if problems:
            raise InvalidInputs(self.id, dict(problems))
        bound = signature.bind(**inputs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def _input_hints(self) -> dict[str, Any]:
        """The parameters' type hints; none if they cannot be resolved (then only JSON counts)."""
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.fn)
            except (NameError, TypeError, AttributeError):  # a name defined later, or a typo
                return {}
        return self._hints

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
