"""Compiled flows: ``@flow`` compile time, ``import flowkit`` time, and @flow vs builder runs.

* Compile: a generated 500-statement ``@flow`` is written to a temporary module
  and imported; the time ``@flow`` takes (decoration to a validated blueprint)
  is measured inside the module, and Python's own ``compile()`` of the same
  source is the baseline.
* Import: ``python -c "import flowkit"`` minus ``python -c "pass"``, in fresh
  subprocesses taken in turns (medians), plus the heaviest modules from
  ``python -X importtime``.
* Runs: the chain (a loop calling a node N times) and the fan
  (``flow.map(node, range(N))``) written as ``@flow``, against the builder
  chain and fan of the same N on the same Runtime.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio

import flowkit

from ._util import Config, Table, interleaved_async, ratio, sig
from .shapes import build


def available() -> bool:
    """Whether the ``@flow`` compiler exists in this checkout."""
    try:
        from flowkit.dsl._flow import flow  # noqa: F401
        from flowkit.dsl._node import node  # noqa: F401
    except ImportError:
        return False
    return True


# -- compile time ------------------------------------------------------------------------------


def flow_source(statements: int) -> str:
    """A module with one ``@flow`` of ``statements`` statements.

    A realistic mix: node calls, expressions, ``if``/``else`` branches and a
    ``for`` loop every 50 statements; every value depends on the previous one.
    """
    body: list[str] = ["v0 = await inc(x)"]
    count = 1  # statements so far, nested ones included; the return makes the last
    i = 1
    while count < statements - 1:
        kind = i % 10
        room = statements - 1 - count
        if kind == 3 and room >= 3:
            body.append(
                f"if v{i - 1} > 500:\n    v{i} = await inc(v{i - 1})\n"
                f"else:\n    v{i} = v{i - 1} - 1"
            )
            count += 3
        elif kind == 9 and i % 50 == 49 and room >= 3:
            body.append(f"v{i} = 0\nfor k in range(3):\n    v{i} = await add(v{i}, v{i - 1})")
            count += 3
        elif kind in (1, 4, 7):
            body.append(f"v{i} = await inc(v{i - 1})")
            count += 1
        elif kind in (2, 5, 8):
            body.append(f"v{i} = v{i - 1} * 2 % 1000 + {i}")
            count += 1
        elif kind == 6:
            body.append(f"v{i} = await add(v{i - 1}, v{i - 2})")
            count += 1
        else:
            body.append(f"v{i} = max(v{i - 1}, {i})")
            count += 1
        i += 1
    body.append(f"return v{i - 1}")
    indented = textwrap.indent("\n".join(body), "    ")
    return (
        "import time as _time\n"
        "from flowkit.dsl._flow import flow\n"
        "from flowkit.dsl._node import node\n\n\n"
        "@node\nasync def inc(x: int) -> int:\n    return x + 1\n\n\n"
        "@node\nasync def add(a: int, b: int) -> int:\n    return a + b\n\n\n"
        "_t0 = _time.perf_counter()\n\n\n"
        "@flow\nasync def big(x: int) -> int:\n" + indented + "\n\n\n"
        "NODES = len(big.blueprint.nodes)\n"
        "COMPILE_S = _time.perf_counter() - _t0\n"
    )


def count_statements(source: str) -> int:
    import ast

    tree = ast.parse(source)
    fn = next(n for n in tree.body if isinstance(n, ast.AsyncFunctionDef) and n.name == "big")
    return sum(isinstance(n, ast.stmt) for n in ast.walk(fn)) - 1  # the def itself


def measure_compile(statements: int, runs: int) -> dict[str, Any]:
    source = flow_source(statements)
    tmp = tempfile.mkdtemp(prefix="flowkit-bench-compile-")
    compile_s, import_s, python_s = [], [], []
    nodes = 0
    sys.path.insert(0, tmp)
    try:
        for r in range(runs + 1):  # a fresh module (file name) each time: nothing cached
            name = f"_bench_flow_{os.getpid()}_{r}"
            Path(tmp, f"{name}.py").write_text(source)
            importlib.invalidate_caches()
            start = time.perf_counter()
            module = importlib.import_module(name)
            imported = time.perf_counter() - start
            start = time.perf_counter()
            compile(source, f"{name}.py", "exec")
            python = time.perf_counter() - start
            sys.modules.pop(name, None)
            if r == 0:
                continue  # warm-up
            compile_s.append(module.COMPILE_S)
            import_s.append(imported)
            python_s.append(python)
            nodes = module.NODES
    finally:
        sys.path.remove(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "statements": count_statements(source),
        "nodes": nodes,
        "compile_s": statistics.median(compile_s),
        "import_s": statistics.median(import_s),
        "python_s": statistics.median(python_s),
    }


# -- import time -------------------------------------------------------------------------------


def _time_process(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def measure_import(runs: int) -> dict[str, Any]:
    _time_process("import flowkit")  # warm the file cache and the bytecode
    empty, full = [], []
    for _ in range(runs):
        empty.append(_time_process("pass"))
        full.append(_time_process("import flowkit"))
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import flowkit"],
        check=True,
        capture_output=True,
        text=True,
    )
    flowkit_parts: list[tuple[float, str]] = []
    external: dict[str, float] = {}
    total: float | None = None
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative_us, raw = line[12:].split("|")
        name = raw.rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        name = name.strip()
        ms = int(cumulative_us) / 1e3
        root = name.split(".")[0]
        if name == "flowkit":
            total = ms
        elif depth == 1 and root == "flowkit":
            flowkit_parts.append((ms, name))
        elif root != "flowkit" and root not in sys.stdlib_module_names and "." not in name:
            external[name] = max(ms, external.get(name, 0.0))
    return {
        "python_s": statistics.median(empty),
        "with_import_s": statistics.median(full),
        "importtime_s": None if total is None else total / 1e3,
        "flowkit_parts": sorted(flowkit_parts, reverse=True)[:5],
        "external": sorted(((ms, n) for n, ms in external.items()), reverse=True)[:5],
    }


# -- compiled vs builder shapes ----------------------------------------------------------------

_SHAPES_SOURCE = """
from flowkit.dsl._flow import flow
from flowkit.dsl._node import node


@node
async def inc(x=0):
    return (x or 0) + 1


@flow
async def chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await inc(x)
    return x


@flow
async def fan(n: int) -> list:
    return await flow.map(inc, range(n))
"""


def _shapes_module() -> Any:
    """The @flow chain and fan, from a real file (the compiler reads source)."""
    tmp = tempfile.mkdtemp(prefix="flowkit-bench-shapes-")
    path = Path(tmp, "_bench_compiled_shapes.py")
    path.write_text(_SHAPES_SOURCE)
    spec = importlib.util.spec_from_file_location("_bench_compiled_shapes", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.chain.blueprint  # noqa: B018 - compile now, while the file exists
    module.fan.blueprint  # noqa: B018
    shutil.rmtree(tmp, ignore_errors=True)
    return module


async def measure_shape(module: Any, shape: str, n: int, runs: int) -> dict[str, Any]:
    compiled = getattr(module, shape)
    builder = build(shape, n)
    runtime = flowkit.Runtime()

    async def run_compiled() -> None:
        result = await runtime.run(compiled, n=n)
        if result.status != "completed":
            raise RuntimeError(f"@flow {shape} {n}: {result.status}: {result.error}")

    async def run_builder() -> None:
        result = await runtime.run(builder)
        if result.status != "completed":
            raise RuntimeError(f"builder {shape} {n}: {result.status}: {result.error}")

    await run_compiled()
    await run_builder()
    medians = await interleaved_async({"flow": run_compiled, "builder": run_builder}, runs)
    return medians


def run(config: Config) -> list[Table]:
    if not available():
        table = Table("compiled flows")
        table.notes.append("skipped: flowkit.dsl._flow (the @flow compiler) is not importable")
        return [table]
    statements = config.pick(500, 500, 50)
    c = measure_compile(statements, config.pick(9, 5, 1))
    compile_table = Table(f"compile: a generated {c['statements']}-statement @flow")
    compile_table.rows.append(
        {
            "statements": c["statements"],
            "blueprint_nodes": c["nodes"],
            "flow_compile_ms": sig(c["compile_s"] * 1e3),
            "module_import_ms": sig(c["import_s"] * 1e3),
            "python_compile_ms": sig(c["python_s"] * 1e3),
            "x_python_compile": ratio(c["compile_s"], c["python_s"], 1),
        }
    )
    compile_table.notes.append(
        "flow_compile = @flow decoration to a validated blueprint (fresh module each run, "
        "so no parse cache); x_python_compile = that ÷ Python's compile() of the same source"
    )

    i = measure_import(config.pick(9, 5, 2))
    import_table = Table("import flowkit (fresh subprocesses, medians)")
    import_ms = (i["with_import_s"] - i["python_s"]) * 1e3
    import_table.rows.append(
        {
            "python_startup_ms": sig(i["python_s"] * 1e3),
            "with_import_ms": sig(i["with_import_s"] * 1e3),
            "import_flowkit_ms": sig(import_ms),
            "x_python_startup": ratio(import_ms, i["python_s"] * 1e3),
            "importtime_ms": None if i["importtime_s"] is None else sig(i["importtime_s"] * 1e3),
        }
    )
    import_table.notes.append(
        "import_flowkit = median(python -c 'import flowkit') - median(python -c 'pass'); "
        "importtime = flowkit's cumulative time under python -X importtime"
    )
    import_table.notes.append(
        "heaviest parts of flowkit (cumulative ms, first import wins): "
        + ", ".join(f"{name} {ms:.1f}" for ms, name in i["flowkit_parts"])
    )
    import_table.notes.append(
        "heaviest third-party packages (cumulative ms): "
        + ", ".join(f"{name} {ms:.1f}" for ms, name in i["external"])
    )

    module = _shapes_module()
    shapes_table = Table("@flow vs builder: the same shape on the same Runtime (medians)")
    for shape in ("chain", "fan"):
        for n in config.pick((100, 1000, 10000), (100, 1000, 10000), (20,)):
            runs = config.pick(31 if n <= 1000 else 9, 15 if n <= 1000 else 5, 1)
            m = anyio.run(measure_shape, module, shape, n, runs)
            shapes_table.rows.append(
                {
                    "shape": shape,
                    "n": n,
                    "flow_nodes_s": round(n / m["flow"]),
                    "builder_nodes_s": round(n / m["builder"]),
                    "x_builder": ratio(m["builder"], m["flow"]),
                    "flow_us_node": sig(m["flow"] / n * 1e6),
                    "builder_us_node": sig(m["builder"] / n * 1e6),
                }
            )
    shapes_table.notes.append(
        "n = node executions of the work node; chain = `for _ in range(n): x = await inc(x)`, "
        "fan = `await flow.map(inc, range(n))` (default concurrency 10) vs the builder fan "
        "(n parallel nodes + join); x_builder = flow nodes/s ÷ builder nodes/s"
    )
    return [compile_table, import_table, shapes_table]


def summary(tables: list[Table]) -> dict[str, Any]:
    if len(tables) < 3:
        return {}
    return {"compile": tables[0].rows[0], "import": tables[1].rows[0]}
