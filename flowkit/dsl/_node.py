"""``@node``: mark a function (or ``flowkit.Node`` class) as a unit of work."""

from __future__ import annotations

import enum
import functools
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Generic,
    Literal,
    NoReturn,
    ParamSpec,
    TypeVar,
    overload,
)

from .._durations import Backoff, Duration, shown, to_seconds
from .._errors import ConfigurationError
from .._naming import module_name
from ..shell._limits import Limit, Rate, check_limit_key, parse_rate

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

P = ParamSpec("P")
R = TypeVar("R")

CALL_OPTIONS: Final = (
    "retries",
    "timeout",
    "retry_timeout",
    "retry_on",
    "never_retry",
    "backoff",
    "queue",
)
FOREVER: Final = "forever"
"""``retries="forever"``: the same as ``retries=None``, retry without limit."""
Retries = int | Literal["forever"] | None
ErrorTypes = type[Exception] | tuple[type[Exception], ...]


class Unset(enum.Enum):
    """An option not given to ``options()`` (``None`` means something there)."""

    UNSET = enum.auto()


UNSET: Final = Unset.UNSET


class NodeDef(Generic[P, R]):
    """A ``@node`` function: still directly callable, plus the options flows use.

    ``name`` is the base of the node's id in compiled flows; ``registry_name``
    is how blueprints refer to the implementation.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        retries: Retries = 0,
        backoff: Backoff | None = None,
        timeout: Duration | None = None,
        fallback: Callable[..., Any] | None = None,
        retry_on: ErrorTypes = (),
        never_retry: ErrorTypes = (),
        retry_timeout: Duration | None = None,
        queue: str | None = None,
        concurrency: Limit | None = None,
        rate: str | None = None,
        key: str | None = None,
    ) -> None:
        check = Arguments.of_decorator("@node", fn)
        check.implementation("the decorated object", fn)
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        self.registry_name = f"{module_name(fn)}.{qualname if name is None else name}"
        self.__flowkit_impl__ = fn
        check.optional_text("name", name, example="name='charge-card'")
        self.__flowkit_options__: dict[str, Any] = check.node_options(
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            fallback=fallback,
            retry_on=retry_on,
            never_retry=never_retry,
            retry_timeout=retry_timeout,
            queue=queue,
        )
        if concurrency is not None:
            self.__flowkit_options__["concurrency"] = check.limit(concurrency, fn)
        if rate is not None or key is not None:
            self.__flowkit_options__["rate"] = check.rate(rate, key, fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)

    @property
    def settings(self) -> dict[str, Any]:
        """The options declared with ``@node`` (exception types as qualified names)."""
        return dict(self.__flowkit_options__)

    def options(
        self,
        *,
        retries: Retries | Unset = UNSET,
        timeout: Duration | Unset | None = UNSET,
        retry_timeout: Duration | Unset | None = UNSET,
        retry_on: ErrorTypes | Unset = UNSET,
        never_retry: ErrorTypes | Unset = UNSET,
        backoff: Backoff | Unset | None = UNSET,
        queue: str | Unset | None = UNSET,
        **unknown: object,
    ) -> NodeCall[P, R]:
        """This node with options for one call: ``await charge.options(retries=n)(order)``.

        In a compiled flow the options replace the node's own for that call;
        ``retries``, ``timeout``, ``retry_timeout`` and ``queue`` may be expressions
        over the flow's variables, evaluated at the call. Outside a flow the call just runs
        the function, as calling the node does.
        """
        given = {
            "retries": retries,
            "timeout": timeout,
            "retry_timeout": retry_timeout,
            "retry_on": retry_on,
            "never_retry": never_retry,
            "backoff": backoff,
            "queue": queue,
        }
        check = Arguments(f"{self.name}.options()", located=True)
        check.known_options(unknown)
        overrides = check.call_options({k: v for k, v in given.items() if v is not UNSET})
        return NodeCall(self, overrides)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<node {self.name}>"


class NodeCall(Generic[P, R]):
    """A node with options for one call (see :meth:`NodeDef.options`)."""

    def __init__(self, node: NodeDef[P, R], overrides: dict[str, Any]) -> None:
        self.node = node
        self.overrides = overrides

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.node.fn(*args, **kwargs)

    def __repr__(self) -> str:
        shown_options = ", ".join(f"{k}={v!r}" for k, v in self.overrides.items())
        return f"<node {self.node.name} with options({shown_options})>"


@overload
def node(fn: Callable[P, R], /) -> NodeDef[P, R]: ...


@overload
def node(
    *,
    name: str | None = None,
    retries: Retries = 0,
    backoff: Backoff | None = None,
    timeout: Duration | None = None,
    fallback: Callable[..., Any] | None = None,
    retry_on: ErrorTypes = (),
    never_retry: ErrorTypes = (),
    retry_timeout: Duration | None = None,
    queue: str | None = None,
    concurrency: Limit | None = None,
    rate: str | None = None,
    key: str | None = None,
) -> Callable[[Callable[P, R]], NodeDef[P, R]]: ...


def node(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retries: Retries = 0,
    backoff: Backoff | None = None,
    timeout: Duration | None = None,
    fallback: Callable[..., Any] | None = None,
    retry_on: ErrorTypes = (),
    never_retry: ErrorTypes = (),
    retry_timeout: Duration | None = None,
    queue: str | None = None,
    concurrency: Limit | None = None,
    rate: str | None = None,
    key: str | None = None,
) -> NodeDef[P, R] | Callable[[Callable[P, R]], NodeDef[P, R]]:
    """Declare a node; usable bare (``@node``) or called (``@node(retries=3)``).

    ``retries=None`` (or ``"forever"``) retries without limit; ``retry_on`` retries
    only errors of those types, ``never_retry`` never retries errors of those types
    (it wins over ``retry_on``); ``retry_timeout`` stops retrying once that long has
    passed since the first attempt started. ``queue`` sends the node's executions to
    that transport queue, served by the workers started with ``queue=``.
    ``concurrency`` (a :class:`~flowkit.Limit`) caps how many executions run at once,
    per value of one of the node's arguments, across all workers. ``rate`` (``"100/m"``,
    ``"10/s"``) spaces the starts of its executions evenly at that rate, per value of
    the argument ``key`` (one rate for all without it), across all workers; work past
    the rate is delayed, not failed.

    >>> @node(retries=3, timeout="30s")
    ... async def fetch_order(order_id: str) -> dict:
    ...     return {"id": order_id}
    """

    def wrap(target: Callable[P, R]) -> NodeDef[P, R]:
        return NodeDef(
            target,
            name=name,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            fallback=fallback,
            retry_on=retry_on,
            never_retry=never_retry,
            retry_timeout=retry_timeout,
            queue=queue,
            concurrency=concurrency,
            rate=rate,
            key=key,
        )

    return wrap(fn) if fn is not None else wrap


class Arguments:
    """Checks the arguments of one definition (``@node``, ``@flow``, a ``Flow`` method):
    each bad one is a :class:`~flowkit.ConfigurationError` naming the definition, the
    argument, what was given and what to pass instead."""

    def __init__(self, owner: str, *, located: bool = False) -> None:
        self.owner = owner
        self.located = located  # a decorator: say where the user wrote it

    @classmethod
    def of_decorator(cls, decorator: str, target: object) -> Arguments:
        """For ``decorator`` applied to ``target``; its errors give the user's file and line."""
        name = getattr(target, "__qualname__", None)
        return cls(f"{decorator} on {name}" if isinstance(name, str) else decorator, located=True)

    def refuse(self, name: str, value: object, expected: str) -> NoReturn:
        raise ConfigurationError(f"{self._where()}: {name} must be {expected}; got {shown(value)}")

    def _where(self) -> str:
        return f"{self.owner} ({user_location()})" if self.located else self.owner

    def count(self, name: str, value: object, *, minimum: int, example: str) -> int:
        """A whole number (not a bool) of ``minimum`` or more."""
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.refuse(name, value, f"a whole number of {minimum} or more, e.g. {example}")
        return value

    def text(self, name: str, value: object, *, example: str) -> str:
        """A string with something in it besides spaces."""
        if not isinstance(value, str) or not value.strip():
            self.refuse(name, value, f"a non-empty string, e.g. {example}")
        return value

    def optional_text(self, name: str, value: object, *, example: str) -> str | None:
        return None if value is None else self.text(name, value, example=example)

    def duration(self, name: str, value: object, *, zero: bool = False) -> float:
        """Seconds above zero (or zero too, with ``zero``) from any duration form."""
        try:
            seconds = to_seconds(value)  # type: ignore[arg-type]  # checked there
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self._where()}: {name}: {exc}") from None
        if seconds == 0 and not zero:
            self.refuse(name, value, "above zero, e.g. '30s'")
        return seconds

    def optional_duration(self, name: str, value: object) -> float | None:
        return None if value is None else self.duration(name, value)

    def implementation(self, name: str, value: object) -> None:
        """A function, a ``@node`` or a ``flowkit.Node`` class."""
        if not callable(value):
            self.refuse(name, value, "a function, a @node or a flowkit.Node class")

    def optional_callable(self, name: str, value: object) -> None:
        if value is not None and not callable(value):
            self.refuse(name, value, "a function or a @node, or None")

    def optional_backoff(self, name: str, value: object) -> Backoff | None:
        if value is not None and not isinstance(value, Backoff):
            self.refuse(name, value, "a flowkit.Backoff, e.g. Backoff(initial='1s'), or None")
        return value

    def choice(self, name: str, value: object, choices: Collection[str]) -> None:
        if value is not None and value not in choices:
            listed = ", ".join(repr(c) for c in sorted(choices))
            self.refuse(name, value, f"one of {listed}, or None")

    def optional_mapping(self, name: str, value: object, *, example: str) -> None:
        if value is not None and not isinstance(value, Mapping):
            self.refuse(name, value, f"a dict, e.g. {example}, or None")

    def node_options(self, *, fallback: object, **options: object) -> dict[str, Any]:
        """``@node``'s options a flow uses, checked."""
        self.optional_callable("fallback", fallback)
        return {**self.call_options(options), "fallback": fallback}

    def call_options(self, options: Mapping[str, object]) -> dict[str, Any]:
        """Retry and timeout options, checked; exception types become qualified names."""
        checks: dict[str, Callable[[str, Any], Any]] = {
            "retries": self.retries,
            "timeout": self.optional_duration,
            "retry_timeout": self.optional_duration,
            "retry_on": self.error_types,
            "never_retry": self.error_types,
            "backoff": self.optional_backoff,
            "queue": self.optional_queue,
        }
        return {name: checks[name](name, value) for name, value in options.items()}

    def known_options(self, unknown: Mapping[str, object]) -> None:
        """Refuse keywords that are not options of a call."""
        for name in unknown:
            raise ConfigurationError(
                f"{self._where()}: unknown option {name!r}; options() takes "
                f"{', '.join(CALL_OPTIONS)}"
            )

    def limit(self, value: object, fn: Callable[..., Any], what: str = "node") -> Limit:
        """A :class:`Limit` whose key names an argument of ``fn`` (a ``what``)."""
        if not isinstance(value, Limit):
            self.refuse("concurrency", value, "a flowkit.Limit, e.g. Limit(max=2, key='account')")
        problem = check_limit_key(value.key, fn, what)
        if problem is not None:
            self.refuse("concurrency", value, f"a Limit whose key names an argument: {problem}")
        return value

    def rate(self, rate: object, key: object, fn: Callable[..., Any]) -> Rate:
        """A rate like ``"100/m"``, and a ``key`` (with a rate only) naming an argument."""
        if rate is None:
            self.refuse(
                "key",
                key,
                "given with rate= (e.g. rate='100/m', key='tenant'); "
                "a concurrency limit takes its key in Limit(max=..., key=...)",
            )
        if key is not None and not isinstance(key, str):
            self.refuse("key", key, "the name of an argument of the node, e.g. key='tenant'")
        problem = check_limit_key(key, fn)
        if problem is not None:
            self.refuse("key", key, f"the name of an argument of the node: {problem}")
        try:
            return parse_rate(rate, key)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{self._where()}: {exc}") from None

    def optional_queue(self, name: str, value: object) -> str | None:
        text = self.optional_text(name, value, example="queue='gpu'")
        if text is not None and text != text.strip():
            self.refuse(name, value, "a queue name without spaces around it, e.g. queue='gpu'")
        return text

    def retries(self, name: str, value: object) -> int | None:
        """A whole number of 0 or more, or ``None`` / ``"forever"`` for no limit."""
        if value is None or value == FOREVER:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.refuse(name, value, "a whole number of 0 or more (e.g. 3), or None for no limit")
        return value

    def error_types(self, name: str, value: object) -> tuple[str, ...]:
        """An exception class or a tuple of them, as qualified names."""
        types = value if isinstance(value, tuple | list) else (value,)
        for item in types:
            if not (isinstance(item, type) and issubclass(item, Exception)):
                self.refuse(
                    name, value, "an exception class or a tuple of them, e.g. (TimeoutError,)"
                )
        return tuple(f"{t.__module__}.{t.__qualname__}" for t in types)


_CONFIG_DEFAULTS: Final[dict[str, Any]] = {
    "retries": 0,
    "backoff": None,
    "timeout": None,
    "retry_on": (),
    "never_retry": (),
    "retry_timeout": None,
    "queue": None,
}


def config_fields(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``NodeConfig`` fields (but ``fallback`` and ``join``) of checked options."""
    return {name: options.get(name, default) for name, default in _CONFIG_DEFAULTS.items()}


def check_flow_arguments(
    fn: object, id: object, version: object, concurrency: object = None
) -> Limit | None:
    """Refuse a ``@flow`` target that is not a function, an empty ``id``, a ``version``
    that is not a whole number of 1 or more, or a ``concurrency`` that is not a
    :class:`Limit` keyed by an input of the flow (the compiler checks the body itself)."""
    check = Arguments.of_decorator("@flow", fn)
    if not inspect.isfunction(fn):
        check.refuse("the decorated object", fn, "an async def function")
    check.optional_text("id", id, example="id='checkout'")
    check.count("version", version, minimum=1, example="version=2")
    if concurrency is None:
        return None
    return check.limit(concurrency, fn, "flow")


_PACKAGE = Path(__file__).resolve().parents[1]


def user_location() -> str:
    """``"<file>, line <n>"`` of the innermost caller outside flowkit: where the user's
    code made the definition being checked."""
    frame = sys._getframe(1)
    while frame.f_back is not None and _inside_flowkit(frame.f_code.co_filename):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}, line {frame.f_lineno}"


def _inside_flowkit(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(_PACKAGE)
