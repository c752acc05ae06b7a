"""Everything outside the compiled subset is a CompileError at decoration time, with a hint.

Most cases are written into a temporary module (the compiler reads real
source): the line marked ``# <-`` is the one the error must point at.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

from flowkit import CompileError, FlowkitError
from flowkit.dsl._flow import flow
from flowkit.dsl._node import node

if TYPE_CHECKING:
    from pathlib import Path

PRELUDE = """\
import asyncio, datetime, os, random, secrets, time, uuid
from datetime import datetime as dt
from random import choice
from flowkit.dsl._flow import flow
from flowkit.dsl._node import node


@node
async def work(x=None):
    return x


async def plain_async(x=None):
    return x


def plain(x=None):
    return x


@flow
async def other(x=None):
    return x


"""
_COUNTER = itertools.count()


def load(tmp_path: Path, source: str) -> Any:
    """Import ``source`` as a fresh module (its flows compile on import)."""
    name = f"flowkit_compile_case_{next(_COUNTER)}"
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def flow_source(body: str) -> str:
    return PRELUDE + "@flow\nasync def subject(x=1):\n" + textwrap.indent(body, "    ") + "\n"


def marked_line(source: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if "# <-" in line)


def compile_error(tmp_path: Path, body: str) -> tuple[CompileError, int]:
    source = flow_source(body)
    with pytest.raises(CompileError) as info:
        load(tmp_path, source)
    return info.value, marked_line(source)


REJECTED = [
    ("nested-def", "def helper():  # <-\n    pass", "nested function", "module level"),
    ("nested-async-def", "async def helper():  # <-\n    pass", "nested function", "@node"),
    ("nested-class", "class Local:  # <-\n    pass", "class definitions", "module level"),
    ("lambda", "key = lambda v: v  # <-", "lambda", "module-level function"),
    ("yield", "yield x  # <-", "cannot yield", "return the result"),
    ("global", "global counter  # <-", "`global`", "run's state"),
    ("with", "with open('f') as fh:  # <-\n    pass", "`with`", "move this into a @node"),
    ("async-with", "async with plain():  # <-\n    pass", "`async with`", "into a @node"),
    ("async-for", "async for item in plain():  # <-\n    pass", "`async for`", "flow.map"),
    ("import", "import json  # <-", "imports", "module level"),
    ("del", "y = 1\ndel y  # <-", "`del`", "assign None"),
    ("except-star", "try:  # <-\n    pass\nexcept* ValueError:\n    pass", "except*", "`except`"),
    ("walrus", "if (y := x):  # <-\n    pass", "`:=`", "separate statement"),
    ("await-asyncio", "await asyncio.sleep(1)  # <-", "not a @node", "flow.sleep"),
    ("await-plain-async", "await plain_async(x)  # <-", "not a @node", "with @node"),
    ("await-plain", "await plain(x)  # <-", "not a @node", "only @node functions"),
    ("await-variable", "fn = work\nawait fn(x)  # <-", "flow variable", "by name"),
    ("await-non-call", "await x  # <-", "only calls can be awaited", "await a call"),
    ("node-no-await", "y = work(x)  # <-", "called without await", "await work(...)"),
    ("flow-no-await", "y = other(x)  # <-", "called without await", "await other(...)"),
    ("primitive-no-await", "y = flow.sleep(1)  # <-", "must be awaited", "await flow.sleep"),
    ("await-in-or", "y = x or await work(x)  # <-", "`and`/`or`", "own statement"),
    ("await-in-listcomp", "y = [await work(i) for i in x]  # <-", "comprehension", "own statement"),
    ("await-in-ifexp", "y = 1 if x else await work(x)  # <-", "conditional", "own statement"),
    ("starred-target", "a, *rest = x  # <-", "starred assignment", "slice"),
    ("starred-args", "await work(*x)  # <-", "`*args`", "explicitly"),
    ("kwargs-args", "await work(**x)  # <-", "`**kwargs`", "explicitly"),
    ("bare-raise", "raise  # <-", "bare `raise`", "raise ValueError"),
    ("rebind-exception", "try:\n    await work(x)\nexcept ValueError as e:\n    e = 1  # <-",
     "exception bound", "another variable"),
    ("wait-name", "name = 'a'\nawait flow.wait(name)  # <-", "must be a literal", "the value"),
    ("wait-timeout", "await flow.wait('a', timeout=x)  # <-", "must be a literal", "the value"),
    ("sleep-duration", "await flow.sleep('10 minutes')  # <-", "invalid duration", '"30s"'),
    ("webhook-secret", "await flow.webhook('/h', secret=plain(x))  # <-", "secret", "os.environ"),
    ("map-node", "await flow.map(plain, x)  # <-", "needs a @node", "pass the node"),
    ("map-concurrency", "await flow.map(work, x, concurrency=0)  # <-", "positive", "concurrency="),
    ("gather-awaited", "await flow.gather(await work(x))  # <-", "not awaited", "drop the `await`"),
    ("gather-value", "await flow.gather(x)  # <-", "can only run calls", "@node"),
    ("gather-empty", "await flow.gather()  # <-", "takes the calls", "flow.gather(a(...)"),
    ("subflow-args", "await other(1, 2, 3)  # <-", "do not match flow 'other'", "arguments"),
    ("for-target", "for x.attr in [1]:  # <-\n    pass", "assigned to names", "variable"),
    ("while-await-else", "while await work(x):  # <-\n    pass\nelse:\n    pass",
     "cannot have an `else`", "into a variable"),
]  # fmt: skip

NONDETERMINISTIC = [
    "time.time()", "time.monotonic()", "time.perf_counter()", "datetime.datetime.now()",
    "dt.now()", "dt.utcnow()", "datetime.date.today()", "random.random()",
    "random.randint(1, 6)", "choice([1, 2])", "uuid.uuid4()", "uuid.uuid1()", "os.urandom(8)",
    "secrets.token_hex(8)",
]  # fmt: skip


class TestRejected:
    """Each construct outside the subset points at its line, with a hint to fix it."""

    @pytest.mark.parametrize(
        ("body", "message", "hint"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
    )
    def test_construct(self, tmp_path: Path, body: str, message: str, hint: str) -> None:
        error, line = compile_error(tmp_path, body)
        assert line == error.lineno
        assert message in error.message
        assert hint in error.hint
        assert "# <-" in error.source_line
        assert str(error.filename).endswith(".py")

    @pytest.mark.parametrize("call", NONDETERMINISTIC)
    def test_nondeterministic_call(self, tmp_path: Path, call: str) -> None:
        error, line = compile_error(tmp_path, f"y = {call}  # <-")
        assert line == error.lineno
        assert "is not deterministic" in error.message
        assert "move this into a @node" in error.hint

    def test_nondeterministic_node_argument(self, tmp_path: Path) -> None:
        error, line = compile_error(tmp_path, "await work(time.time())  # <-")
        assert line == error.lineno
        assert "time.time() is not deterministic" in error.message

    def test_nondeterministic_name_imported_later(self, tmp_path: Path) -> None:
        prelude = PRELUDE.replace("os, random, secrets", "os, secrets")
        body = "@flow\nasync def subject(x=1):\n    return random.random()  # <-\n"
        source = prelude + body + "\n\nimport random\n"
        with pytest.raises(CompileError) as info:
            load(tmp_path, source)
        assert marked_line(source) == info.value.lineno
        assert "random.random() is not deterministic" in info.value.message

    def test_flow_variables_are_not_mistaken_for_modules(self, tmp_path: Path) -> None:
        module = load(tmp_path, flow_source("random = [x]\nreturn random.copy()"))
        assert [2] == module.subject.run_sync(x=2).output

    def test_position_and_message(self, tmp_path: Path) -> None:
        error, line = compile_error(tmp_path, "y = work(x)  # <-")
        assert 8 == error.col_offset  # `work` in "    y = work(x)"
        assert (error.filename, line, 9) == (error.filename, error.lineno, error.offset)
        assert isinstance(error, FlowkitError)
        assert isinstance(error, SyntaxError)
        assert str(error).startswith("node 'work' is called without await (")
        assert "hint: write `await work(...)`" in str(error)
        assert str(error).endswith("y = work(x)  # <-")


class TestRejectedInFunctions:
    """Flows defined inside a function are checked the same way (lines are the file's)."""

    def test_nested_def(self) -> None:
        with pytest.raises(CompileError) as info:

            @flow
            async def bad() -> None:
                def helper() -> None:  # <- nested def
                    pass

        assert this_line("# <- nested def") == info.value.lineno
        assert "module level" in info.value.hint

    def test_nonlocal(self) -> None:
        counter = 0

        with pytest.raises(CompileError) as info:

            @flow
            async def bad() -> None:
                nonlocal counter  # <- nonlocal
                counter += 1

        assert this_line("# <- nonlocal") == info.value.lineno
        assert "run's state" in info.value.hint

    def test_local_node_without_await(self) -> None:
        @node
        async def local(x: int) -> int:
            return x

        with pytest.raises(CompileError) as info:

            @flow
            async def bad(x: int) -> int:
                return local(x)  # type: ignore[return-value]  # <- no await

        assert this_line("# <- no await") == info.value.lineno
        assert "await local(...)" in info.value.hint


def this_line(marker: str) -> int:
    with open(__file__) as source:
        return next(
            i for i, line in enumerate(source, 1) if marker in line and "this_line" not in line
        )


class TestWholeFunction:
    """Problems with the function itself: not async, no source, names never defined."""

    def test_plain_def(self, tmp_path: Path) -> None:
        source = PRELUDE + "@flow  \ndef subject(x):  # <-\n    return x\n"
        with pytest.raises(CompileError) as info:
            load(tmp_path, source)
        assert marked_line(source) == info.value.lineno
        assert "async def subject" in info.value.hint

    def test_reserved_parameter(self, tmp_path: Path) -> None:
        source = PRELUDE + "@flow\nasync def subject(order, run_id):  # <-\n    return order\n"
        with pytest.raises(CompileError) as info:
            load(tmp_path, source)
        assert marked_line(source) == info.value.lineno
        assert "reserved" in info.value.message
        assert "rename the parameter" in info.value.hint

    def test_no_source(self) -> None:
        namespace: dict[str, Any] = {"flow": flow}
        with pytest.raises(CompileError, match="cannot read the source") as info:
            exec("@flow\nasync def generated():\n    return 1\n", namespace)
        assert "define flows in a .py file" in info.value.hint

    def test_unresolved_name_fails_on_first_use(self, tmp_path: Path) -> None:
        module = load(tmp_path, flow_source("return await never_defined(x)  # <-"))
        with pytest.raises(CompileError) as info:
            module.subject.blueprint  # noqa: B018
        assert marked_line(flow_source("return await never_defined(x)  # <-")) == info.value.lineno
        assert "cannot resolve 'never_defined'" in info.value.message
        assert "define the node" in info.value.hint
