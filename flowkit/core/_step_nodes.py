"""How the core starts each kind of node; mixed into ``_core.Step``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._durations import to_seconds
from .._errors import FlowkitError, describe
from . import _protocol as proto
from ._admission import lent_slot
from ._policy import evaluated_options
from ._program import wait_name

if TYPE_CHECKING:
    from collections import deque

    from ._program import Program
    from ._state import RunState, RunStatus

_ACT, _ARRIVED, _TAKEN, _FIRED, _STATUS = range(5)
_CANCELLED = "flowkit._errors.Cancelled"


class NodeSteps:
    """Node-kind behaviour of a core step (see ``_core.Step`` for the rest)."""

    p: Program
    s: RunState
    commands: list[proto.Command]
    queue: deque[tuple[str, bool, bool, str | None]]
    buffered_waits: list[tuple[str, dict[str, Any]]]
    failing: list[tuple[str, str, Any]]

    if TYPE_CHECKING:

        def record(self, node_id: str) -> list[Any]: ...
        def complete(self, node_id: str, value: Any, action: str | None) -> None: ...
        def route(
            self, node_id: str, value: Any, action: str | None, *, exclude: str = ""
        ) -> None: ...
        def fail_node(self, node_id: str, error: dict[str, Any]) -> None: ...
        def finish(self, status: RunStatus, *, output: Any = None, error: Any = None) -> None: ...
        def cancel_nodes(self, nodes: tuple[str, ...] | None, *, skip: bool) -> None: ...
        def note(
            self, type_: str, node_id: str | None, attempt: int | None = None, *, data: Any = None
        ) -> None: ...
        def continue_as_new(self, node_id: str, source: str) -> None: ...

    def fire(self, node_id: str, back: bool, source: str | None) -> None:
        """Start one activation of ``node_id``."""
        record = self.record(node_id)
        record[_ACT] += 1
        record[_STATUS] = "running"
        spec = self.p.specs[node_id]
        try:
            getattr(self, "_fire_" + spec.kind)(node_id, spec.params, back, source)
        except FlowkitError as exc:
            self.fail_node(node_id, _info(exc))
        except Exception as exc:  # an expression of the flow raised
            self.fail_node(node_id, _info(exc))

    # -- kinds ----------------------------------------------------------------
    def _fire_call(self, node_id: str, params: dict[str, Any], back: bool, src: Any) -> None:
        if params.get("map"):
            self.start_batch(node_id, params)
            return
        args, kwargs = self.arguments(node_id, params, src)
        options = self.call_options(node_id, params)
        self.dispatch(node_id, 1, args, kwargs, options=options)

    def call_options(self, node_id: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The options computed at this call (``node.options(retries=n)(...)``)."""
        sources = params.get("options")
        if not sources:
            return None
        ctx = self.s.context
        values = {name: self.p.expr(source)(ctx) for name, source in sources.items()}
        return evaluated_options(values, node_id)

    def _fire_let(self, node_id: str, params: dict[str, Any], back: bool, src: Any) -> None:
        value = self.p.expr(params["expr"])(self.s.context) if "expr" in params else None
        self.complete(node_id, value, None)

    def _fire_branch(self, node_id: str, params: dict[str, Any], back: bool, src: Any) -> None:
        if "patch" in params:  # decided by the patches the run recorded at its start
            label = "true" if params["patch"] in self.s.header.get("patches", ()) else "false"
        elif "cond" in params:
            label = "true" if self.p.expr(params["cond"])(self.s.context) else "false"
        else:
            label = None
        self.complete(node_id, None, label)

    def _fire_join(self, node_id: str, params: dict[str, Any], back: bool, src: Any) -> None:
        outputs = self.s.sections["outputs"]
        if params.get("first"):
            value: Any = outputs.get(src) if src else None
        elif "collect" in params:
            value = tuple(outputs.get(n) for n in params["collect"])
        else:
            value = self.join_input(node_id)
        self.complete(node_id, value, None)

    def _fire_return(self, node_id: str, params: dict[str, Any], back: bool, src: Any) -> None:
        from ._state import RunStatus

        if params.get("raise"):
            error = dict(self.s.context.get("__error__") or {})
            cancelled = error.get("type") == _CANCELLED
            self.finish(RunStatus.CANCELLED if cancelled else RunStatus.FAILED, error=error or None)
            return
        if "continue_as_new" in params:
            self.continue_as_new(node_id, params["continue_as_new"])
            return
        expr = params.get("expr")
        value = self.p.expr(expr)(self.s.context) if expr else None
        self.s.put("outputs", node_id, value)
        self.finish(RunStatus.COMPLETED, output=value)

    def _fire_sleep(self, node_id: str, params: dict[str, Any], back: bool, src: Any) -> None:
        delay = self.sleep_delay(params)
        timer_id = f"sleep:{node_id}@{self.record(node_id)[_ACT]}"
        self.s.put("timers", timer_id, {"node": node_id, "purpose": "sleep"})
        self.note("timer:set", node_id, data={"timer_id": timer_id, "delay": delay})
        self.commands.append(proto.StartTimer(timer_id, node_id, delay, "sleep"))

    def sleep_delay(self, params: dict[str, Any]) -> float:
        if "duration_expr" in params:
            return to_seconds(self.p.expr(params["duration_expr"])(self.s.context))
        return to_seconds(params.get("duration", 0))

    def _fire_wait(self, node_id: str, params: dict[str, Any], back: bool, src: Any) -> None:
        self.enter_wait(node_id, self.record(node_id)[_ACT])

    def enter_wait(self, node_id: str, act: int, suffix: str = "") -> None:
        """Wait for the node's signal (taking a buffered one); ``suffix`` marks its timer."""
        name = wait_name(self.p.specs[node_id])
        wait: dict[str, Any] = {"node": node_id, "act": act}
        if self.s.sections["signals"].get(name):
            self.s.put("waits", name, wait)
            self.buffered_waits.append((name, wait))  # taken once the rest has fired
            return
        timeout = self.p.specs[node_id].params.get("timeout")
        if timeout is not None:
            timer_id = f"timeout:{node_id}@{act}{suffix}"
            wait["timer"] = timer_id
            record = {"node": node_id, "purpose": "timeout", "wait": name}
            self.s.put("timers", timer_id, record)
            self.commands.append(
                proto.StartTimer(timer_id, node_id, to_seconds(timeout), "timeout")
            )
        self.s.put("waits", name, wait)
        self.commands.append(proto.AwaitSignal(node_id, name))

    _fire_webhook = _fire_wait

    def _fire_subflow(self, node_id: str, params: dict[str, Any], back: bool, src: Any) -> None:
        args, kwargs = self.arguments(node_id, params)
        if args and not kwargs and isinstance(args[0], dict):
            kwargs = dict(args[0])
        act = self.record(node_id)[_ACT]
        child_id = f"{self.s.run_id}/{node_id}@{act}"
        if "run_id" in params:  # `await child.start(run_id=...)`: not waited for
            child_id = str(self.p.expr(params["run_id"])(self.s.context))
        blueprint_id = str(params.get("blueprint_id", ""))
        record = {"node": node_id, "act": act, "blueprint_id": blueprint_id, "inputs": kwargs}
        if "run_id" in params:
            record["started"] = True
            record["detach"] = bool(params.get("detach"))
        self.s.put("children", child_id, record)
        slot = lent_slot(self.s.header)
        self.commands.append(proto.StartChild(child_id, node_id, blueprint_id, kwargs, slot))
        if "run_id" in params:
            self.complete(node_id, child_id, None)

    def _fire_loop(self, node_id: str, params: dict[str, Any], back: bool, src: Any) -> None:
        if "mode" in params:
            self.python_loop(node_id, params, back)
        else:
            self.builder_loop(node_id, params, src)

    # -- loops ----------------------------------------------------------------
    def builder_loop(self, node_id: str, params: dict[str, Any], src: str | None) -> None:
        outputs = self.s.sections["outputs"]
        value = outputs.get(src) if src else None
        scope = {"result": value, "state": self.s.context, "input": self.s.header.get("inputs")}
        again = bool(self.p.condition(str(params.get("condition", "False")))(scope))
        self.iterate(node_id, params, again, value, ran=1)

    def python_loop(self, node_id: str, params: dict[str, Any], back: bool) -> None:
        loops = self.s.sections["loops"]
        ctx = self.s.context
        if not back or node_id not in loops:
            state: dict[str, Any] = {"n": 0}
            if params["mode"] == "for":
                state["items"] = list(self.p.expr(params["iter"])(ctx))
            self.s.put("loops", node_id, state)
        state = loops[node_id]
        if params["mode"] == "for":
            again = state["n"] < len(state["items"])
            if again:
                self.assign(params["target"], state["items"][state["n"]])
        else:
            again = bool(self.p.expr(params["cond"])(ctx))
        self.iterate(node_id, params, again, None)

    def iterate(
        self, node_id: str, params: dict[str, Any], again: bool, value: Any, *, ran: int = 0
    ) -> None:
        """Go round again (``again``) or exit; ``max_iterations`` caps how often the body runs.

        ``ran`` is 1 for builder loops, whose body has run once before the
        loop node first decides.
        """
        loops = self.s.sections["loops"]
        state = loops.get(node_id) or {"n": 0}
        start = str(params.get("start", ""))
        if not again:
            self.s.drop("loops", node_id)
            self.record(node_id)[_STATUS] = "done"
            if "assign" not in params:
                self.s.put("outputs", node_id, value)
            self.route(node_id, value, "exit", exclude=start)
            for edge in self.p.out[node_id]:
                if edge.target == start and not edge.back:
                    self.queue.append((start, False, False, node_id))
            return
        limit = int(params.get("max_iterations", 10_000))
        if state["n"] + ran >= limit:
            raise LoopLimitExceeded(node_id, limit)
        self.s.put("loops", node_id, dict(state, n=state["n"] + 1))
        for reset in self.p.loop_resets.get(node_id, ()):
            record = self.record(reset)
            record[_ARRIVED] = record[_TAKEN] = record[_FIRED] = 0
        for edge in self.p.out[node_id]:
            if edge.target == start:
                self.queue.append((start, True, edge.back, None))

    # -- batches --------------------------------------------------------------
    def start_batch(self, node_id: str, params: dict[str, Any]) -> None:
        items = list(self.batch_items(node_id, params))
        act = self.record(node_id)[_ACT]
        limit = max(1, int(params.get("concurrency") or len(items) or 1))
        self.note("batch:start", node_id, data={"size": len(items), "concurrency": limit})
        if not items:
            self.note("batch:finish", node_id, data={"size": 0})
            self.complete(node_id, [], None)
            return
        batch = {
            "act": act,
            "items": items,
            "next": 0,
            "done": 0,
            "results": [None] * len(items),
            "limit": limit,
        }
        self.s.put("batches", node_id, batch)
        for _ in range(min(limit, len(items))):
            self.next_batch_item(node_id, batch)

    def batch_items(self, node_id: str, params: dict[str, Any]) -> Any:
        if "items_expr" in params:
            return self.p.expr(params["items_expr"])(self.s.context)
        if "items" in params:
            return self.source(str(params["items"]))
        args, kwargs = self.arguments(node_id, {})
        return args[0] if args else next(iter(kwargs.values()), [])

    def next_batch_item(self, node_id: str, batch: dict[str, Any]) -> None:
        index = batch["next"]
        batch["next"] = index + 1
        self.s.touch("batches", node_id)
        self.dispatch(node_id, 1, (batch["items"][index],), {}, item=index, act=batch["act"])

    def batch_item_done(self, dispatch: dict[str, Any], output: Any) -> None:
        node_id = dispatch["node"]
        batch = self.s.sections["batches"].get(node_id)
        if batch is None:
            return
        batch["results"][dispatch["item"]] = output
        batch["done"] += 1
        self.s.touch("batches", node_id)
        if batch["next"] < len(batch["items"]):
            self.next_batch_item(node_id, batch)
        elif batch["done"] == len(batch["items"]):
            self.s.drop("batches", node_id)
            self.note("batch:finish", node_id, data={"size": len(batch["items"])})
            self.complete(node_id, list(batch["results"]), None)

    def batch_failed(self, dispatch: dict[str, Any], error: dict[str, Any]) -> None:
        node_id = dispatch["node"]
        sections = self.s.sections
        if node_id in sections["batches"]:
            self.failing.append(("batches", node_id, sections["batches"][node_id]))
        dispatches = sections["dispatches"].items()
        self.failing.extend(("dispatches", k, d) for k, d in dispatches if d["node"] == node_id)
        self.s.drop("batches", node_id)
        self.cancel_nodes((node_id,), skip=False)
        self.fail_node(node_id, dict(error, item=dispatch["item"]))

    # -- dispatch -------------------------------------------------------------
    def dispatch(
        self,
        node_id: str,
        attempt: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        item: int | None = None,
        act: int | None = None,
        fallback: bool = False,
        error: dict[str, Any] | None = None,
        round_: int = 0,
        options: dict[str, Any] | None = None,
        first_started: float | None = None,
        heartbeat: Any = None,
    ) -> None:
        """Execute the node; ``round_`` counts the run's retries (see ``_retry``).

        ``options`` were computed at the call; ``first_started`` is when the first
        attempt of this execution started (for ``retry_timeout``); ``heartbeat`` the
        last details an earlier attempt recorded.
        """
        if act is None:
            act = self.record(node_id)[_ACT]
        suffix = f"@{act}" if item is None else f"@{act}[{item}]"
        dispatch_id = f"{node_id}{suffix}.{attempt}"
        record = {
            "node": node_id,
            "act": act,
            "attempt": attempt,
            "args": args,
            "kwargs": kwargs,
            "item": item,
            "fallback": fallback,
        }
        if round_:
            dispatch_id += f"~{round_}"
            record["round"] = round_
        if error is not None:
            record["error"] = error
        if options:
            record["options"] = options
        if first_started is not None:
            record["first_started"] = first_started
        if heartbeat is not None:
            record["heartbeat"] = heartbeat
        queue = (options or {}).get("queue") or self.p.specs[node_id].config.queue
        if queue is not None:
            record["queue"] = queue
        self.s.put("dispatches", dispatch_id, record)
        key = f"{self.s.run_id}:{node_id}{suffix}"
        timeout = options.get("timeout") if options else None
        self.commands.append(
            proto.ExecuteNode(
                dispatch_id, node_id, attempt, key, args, kwargs, fallback, timeout, queue
            )
        )

    def redispatch(
        self,
        dispatch: dict[str, Any],
        attempt: int,
        *,
        fallback: bool = False,
        error: dict[str, Any] | None = None,
        first_started: float | None = None,
    ) -> None:
        self.dispatch(
            dispatch["node"],
            attempt,
            tuple(dispatch["args"]),
            dict(dispatch["kwargs"]),
            item=dispatch.get("item"),
            act=dispatch["act"],
            fallback=fallback,
            error=error,
            round_=dispatch.get("round", 0),
            options=dispatch.get("options"),
            first_started=first_started,
            heartbeat=dispatch.get("heartbeat"),
        )

    # -- arguments ------------------------------------------------------------
    def arguments(
        self, node_id: str, params: dict[str, Any], source: str | None = None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments of a node's next execution."""
        spec = self.p.specs[node_id]
        if "args" in params or "kwargs" in params:
            ctx = self.s.context
            args = tuple(self.p.expr(a)(ctx) for a in params.get("args", ()))
            kwargs = {k: self.p.expr(v)(ctx) for k, v in params.get("kwargs", {}).items()}
            return args, kwargs
        if spec.inputs:
            return (), {name: self.source(src) for name, src in spec.inputs.items()}
        preds = self.p.preds[node_id]
        if not preds:
            inputs = self.s.header.get("inputs") or {}
            names = self.p.parameters.get(node_id)
            if names is None:
                return (), dict(inputs)
            return (), {k: v for k, v in inputs.items() if k in names}
        if len(preds) == 1:
            return (self.s.sections["outputs"].get(preds[0]),), {}
        if source is not None and source in preds and self.p.join[node_id] == "any":
            return (self.s.sections["outputs"].get(source),), {}
        return (self.join_input(node_id),), {}

    def join_input(self, node_id: str) -> dict[str, Any]:
        nodes = self.s.sections["nodes"]
        outputs = self.s.sections["outputs"]
        return {
            n: outputs.get(n)
            for n in self.p.preds[node_id]
            if n in nodes and nodes[n][_STATUS] == "done"
        }

    def source(self, ref: str) -> Any:
        """Resolve ``$input.x``, ``$state.k`` or a node id."""
        if ref.startswith("$input"):
            inputs = self.s.header.get("inputs") or {}
            return inputs if ref == "$input" else inputs.get(ref[len("$input.") :])
        if ref.startswith("$state"):
            return self.s.context if ref == "$state" else self.s.context.get(ref[len("$state.") :])
        return self.s.sections["outputs"].get(ref)

    def assign(self, target: Any, value: Any) -> None:
        """Bind a flow variable (or unpack into several, like ``a, b = ...``)."""
        if isinstance(target, str):
            self.s.put("context", target, value)
            return
        values = list(value)
        if len(values) != len(target):
            raise ValueError(
                f"cannot unpack {len(values)} value(s) into {len(target)} name(s) {target}"
            )
        for name, item in zip(target, values, strict=True):
            self.assign(name, item)


class LoopLimitExceeded(FlowkitError):
    """A loop ran more iterations than its ``max_iterations``."""

    def __init__(self, node_id: str, limit: int) -> None:
        self.node_id = node_id
        self.limit = limit
        super().__init__(
            f"loop {node_id!r} exceeded max_iterations={limit}; raise the cap "
            "(max_iterations=...) or make the loop condition reach False; a long-lived "
            "loop (polling, an entity) should end its run with "
            "flow.continue_as_new(...) every few hundred iterations, which starts a "
            "fresh run with a bounded history"
        )


def _info(exc: BaseException) -> dict[str, Any]:
    type_, mro, message = describe(exc)
    return {"type": type_, "mro": list(mro), "message": message}
