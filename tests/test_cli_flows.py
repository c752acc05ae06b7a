"""The ``flowkit`` command as a user meets it: ``flows list|show|lint``, ``worker``, errors.

Each test runs the command in a subprocess (``python -m flowkit``, and the
installed ``flowkit`` script) against small app modules written to a temporary
folder on PYTHONPATH:

* ``flows list`` prints a row per flow, ``--json`` the same as data;
* ``flows show`` prints a flow's nodes and edges, ``--mermaid`` its flowchart and
  ``--json`` its blueprint, which reads back equal to the flow's own;
* ``flows lint`` prints each issue and exits 1 only for an error;
* ``flowkit worker`` is ``python -m flowkit.worker`` (which still works on its own);
* every bad usage is one line on stderr, ``flowkit: error: ...``, and exit 2.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowkit import Blueprint

EXIT_TIMEOUT = 60.0  # a command that only reads an app ends within this (else: a failure)
ERROR = "flowkit: error: "
FLOWKIT = Path(__file__).resolve().parent.parent / "flowkit"

APP = "cli_flows_app"
APP_SOURCE = """
import flowkit
from flowkit import Flow


@flowkit.node
async def hello(name: str) -> str:
    return f"hello {name}"


@flowkit.node(retries=3, timeout="30s")
async def shout(text: str) -> str:
    return text.upper()


@flowkit.flow
async def child(name: str) -> str:
    return await hello(name)


@flowkit.flow(version=2)
async def greet(name: str) -> str:
    text = await hello(name)
    await flowkit.flow.wait("approval", timeout="1h")
    await flowkit.flow.sleep("10m")
    loud = await shout(text)
    return await child(loud)


@flowkit.flow(id="renamed_flow")
async def renamed(name: str) -> str:
    return await hello(name)


def extract() -> int:
    return 1


def load(value: int) -> int:
    return value


pipeline = Flow("pipeline").node("extract", extract).node("load", load).edge("extract", "load")
not_a_flow = 42
"""
WARNING_APP = "cli_flows_warning_app"
WARNING_SOURCE = """
from flowkit import Flow


def step() -> int:
    return 1


lonely = Flow("lonely").node("a", step).node("b", step).node("c", step).edge("a", "b")
"""
ERROR_APP = "cli_flows_error_app"
ERROR_SOURCE = """
from flowkit import Flow


def step() -> int:
    return 1


fine = Flow("fine").node("a", step).node("b", step).edge("a", "b")
broken = Flow("broken").node("a", step).edge("a", "ghost")
"""
BROKEN_APP = "cli_flows_broken_app"
BROKEN_SOURCE = "raise RuntimeError('this module cannot be imported')\n"


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli_flows")
    for name, source in [
        (APP, APP_SOURCE),
        (WARNING_APP, WARNING_SOURCE),
        (ERROR_APP, ERROR_SOURCE),
        (BROKEN_APP, BROKEN_SOURCE),
    ]:
        (folder / f"{name}.py").write_text(source)
    return folder


def _env(app_dir: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COLUMNS", None)  # piped output is then 160 columns wide: one line per row
    if app_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(app_dir), env.get("PYTHONPATH")]))
    return env


def run(
    command: list[str], *, cwd: Path, app_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=_env(app_dir),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=EXIT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} did not end")


def flowkit(app_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m flowkit ARGS`` with the app modules importable."""
    return run([sys.executable, "-m", "flowkit", *args], cwd=app_dir, app_dir=app_dir)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert (0, "") == (result.returncode, result.stderr), result.stderr
    return result.stdout


@pytest.fixture
def app_module(app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The app module, imported in this process too (and forgotten afterwards)."""
    monkeypatch.syspath_prepend(str(app_dir))
    monkeypatch.delitem(sys.modules, APP, raising=False)
    module = importlib.import_module(APP)
    monkeypatch.delitem(sys.modules, APP)
    return module


# -- flows list -----------------------------------------------------------------------------------


def test_list_prints_a_row_per_flow(app_dir: Path) -> None:
    rows = {
        line.split()[0]: line
        for line in ok(flowkit(app_dir, "flows", "list", "--app", APP)).splitlines()
        if line.strip()
    }
    summaries = json.loads(ok(flowkit(app_dir, "flows", "list", "--app", APP, "--json")))
    greet = next(s for s in summaries if s["id"] == "greet")
    assert {"child", "greet", "renamed_flow", "pipeline"} <= rows.keys()
    assert greet["digest"][:12] in rows["greet"]
    assert "wait approval (timeout 1h)" in rows["greet"]
    assert "subflow 1" in rows["greet"]
    assert rows["greet"].rstrip().endswith("child")  # the subflow it starts
    assert "call 2" in rows["pipeline"]


def test_list_json_has_every_flow_and_what_it_pauses_in(app_dir: Path) -> None:
    summaries = json.loads(ok(flowkit(app_dir, "flows", "list", "--app", APP, "--json")))
    greet = next(s for s in summaries if s["id"] == "greet")
    assert ["child", "greet", "renamed_flow", "pipeline"] == [s["id"] for s in summaries]
    assert (2, 6) == (greet["version"], greet["nodes"])
    assert {"call": 2, "return": 1, "sleep": 1, "subflow": 1, "wait": 1} == greet["kinds"]
    assert [{"node": "approval", "signal": "approval", "timeout": 3600.0}] == greet["waits"]
    assert [600.0] == [s["seconds"] for s in greet["sleeps"]]
    assert (["child"], []) == (greet["subflows"], greet["webhooks"])


def test_list_takes_module_colon_attr(app_dir: Path) -> None:
    summaries = json.loads(
        ok(flowkit(app_dir, "flows", "list", "--app", f"{APP}:pipeline", "--json"))
    )
    assert ["pipeline"] == [s["id"] for s in summaries]


# -- flows show -----------------------------------------------------------------------------------


def test_show_prints_the_nodes_and_edges(app_dir: Path) -> None:
    out = ok(flowkit(app_dir, "flows", "show", "--app", f"{APP}:greet"))
    rows = [line.split() for line in out.splitlines()]
    assert ["greet", "version", "2", "digest"] == rows[0][:4]
    assert ["approval", "wait", "signal", "approval", "(timeout", "1h)"] in rows
    assert ["shout", "call", f"{APP}.shout", "3", "30s"] in rows  # retries and timeout
    assert ["child", "subflow", "flow", "child"] in rows
    assert ["approval", "sleep"] in rows  # an edge


def test_show_mermaid(app_dir: Path) -> None:
    out = ok(flowkit(app_dir, "flows", "show", "--app", f"{APP}:pipeline", "--mermaid"))
    assert ["flowchart TD", '    n0["extract"]', '    n1["load"]', "    n0 --> n1"] == (
        out.splitlines()
    )


@pytest.mark.parametrize(("spec", "attr"), [("greet", "greet"), ("renamed_flow", "renamed")])
def test_show_json_reads_back_as_the_flows_blueprint(
    app_dir: Path, app_module: Any, spec: str, attr: str
) -> None:
    """``spec``: the attribute, or the blueprint id of a flow whose attribute differs."""
    out = ok(flowkit(app_dir, "flows", "show", "--app", f"{APP}:{spec}", "--json"))
    expected = getattr(app_module, attr).blueprint
    shown = Blueprint.from_json(out)
    assert (expected, expected.digest) == (shown, shown.digest)


# -- flows lint -----------------------------------------------------------------------------------


def test_lint_clean_flows(app_dir: Path) -> None:
    assert "no issues in 4 flows" in ok(flowkit(app_dir, "flows", "lint", "--app", APP))


def test_lint_a_warning_exits_0(app_dir: Path) -> None:
    result = flowkit(app_dir, "flows", "lint", "--app", WARNING_APP)
    rows = [line.split(maxsplit=4) for line in result.stdout.splitlines()]
    assert (0, "") == (result.returncode, result.stderr), result.stdout
    assert [
        "lonely",
        "warning",
        "orphan",
        "c",
        "node 'c' has no edges; connect it or remove it",
    ] in (rows)
    assert "0 errors, 1 warning in 1 flow" in result.stdout


def test_lint_an_error_exits_1(app_dir: Path) -> None:
    result = flowkit(app_dir, "flows", "lint", "--app", ERROR_APP)
    rows = [line.split()[:4] for line in result.stdout.splitlines()]
    assert (1, "") == (result.returncode, result.stderr), result.stdout
    assert ["broken", "error", "unknown-edge-target", "a"] in rows
    assert "1 error, 0 warnings in 2 flows" in result.stdout


# -- flowkit worker, python -m flowkit.worker -----------------------------------------------------


def test_worker_help_is_the_workers(app_dir: Path) -> None:
    out = ok(flowkit(app_dir, "worker", "--help"))
    assert out.startswith("usage: flowkit worker ")
    assert [] == [f for f in ("--app", "--transport", "--store", "--lease") if f not in out]
    assert "example: flowkit worker --app " in out


def test_python_m_flowkit_worker_still_works(app_dir: Path) -> None:
    result = run([sys.executable, "-m", "flowkit.worker", "--help"], cwd=app_dir)
    assert ok(result).startswith("usage: python -m flowkit.worker ")
    result = run(
        [sys.executable, "-m", "flowkit.worker", "--lease", "0", "--app", APP], cwd=app_dir
    )
    assert (2, ["flowkit.worker: error: argument --lease"]) == (
        result.returncode,
        [line[:39] for line in result.stderr.splitlines()],
    )


# -- the installed script, help, version ----------------------------------------------------------


def test_the_flowkit_script_reads_apps_in_the_current_folder(app_dir: Path) -> None:
    script = Path(sys.executable).parent / "flowkit"
    if not script.exists():
        pytest.fail(f"no {script}: install the project (pip install -e .) to get the script")
    result = run([str(script), "flows", "list", "--app", APP, "--json"], cwd=app_dir)
    assert "greet" in [s["id"] for s in json.loads(ok(result))]


@pytest.mark.parametrize(
    "command", [[], ["flows"], ["flows", "list"], ["flows", "show"], ["flows", "lint"]]
)
def test_help_ends_with_an_example(app_dir: Path, command: list[str]) -> None:
    out = ok(flowkit(app_dir, *command, "--help"))
    assert out.startswith(f"usage: {' '.join(['flowkit', *command])} ")
    assert out.rstrip().splitlines()[-1].startswith("example: flowkit ")


def test_version(app_dir: Path) -> None:
    from flowkit import __version__

    assert f"flowkit {__version__}\n" == ok(flowkit(app_dir, "--version"))


# -- bad usage: one line, exit 2 ------------------------------------------------------------------

BAD_USAGE = [
    pytest.param([], "COMMAND", id="no-command"),
    pytest.param(["bogus"], "'bogus'", id="unknown-command"),
    pytest.param(["flows"], "SUBCOMMAND", id="no-subcommand"),
    pytest.param(["flows", "bogus"], "'bogus'", id="unknown-subcommand"),
    pytest.param(["flows", "list"], "--app", id="missing-app"),
    pytest.param(["flows", "show"], "--app", id="show-missing-app"),
    pytest.param(["flows", "lint"], "--app", id="lint-missing-app"),
    pytest.param(["flows", "list", "--app", "1bad"], "--app", id="app-not-a-name"),
    pytest.param(
        ["flows", "list", "--app", "no_such_module_for_cli"], "PYTHONPATH", id="no-module"
    ),
    pytest.param(["flows", "lint", "--app", BROKEN_APP], "RuntimeError", id="module-raises"),
    pytest.param(["flows", "list", "--app", f"{APP}:not_a_flow"], "not a flow", id="not-a-flow"),
    pytest.param(["flows", "list", "--app", f"{APP}:hello"], "not a flow", id="a-node"),
    pytest.param(
        ["flows", "show", "--app", f"{APP}:not_a_flow"], "not a flow", id="show-not-a-flow"
    ),
    pytest.param(["flows", "show", "--app", f"{APP}:missing"], "greet", id="show-no-such-flow"),
    pytest.param(["flows", "show", "--app", APP], f"--app {APP}:child", id="show-which-flow"),
    pytest.param(["flows", "list", "--app", ERROR_APP], "flows lint", id="flow-does-not-build"),
    pytest.param(["flows", "list", "--app", APP, "--colour"], "--colour", id="unknown-flag"),
    pytest.param(
        ["flows", "show", "--app", f"{APP}:greet", "--json", "--mermaid"],
        "--json",
        id="json-mermaid",
    ),
    pytest.param(["worker", "--app", APP, "--concurrency", "0"], "--concurrency", id="worker-flag"),
    pytest.param(
        [
            "worker",
            "--app",
            f"{APP}:not_a_flow",
            "--transport",
            "memory://",
            "--store",
            "memory://",
        ],
        "not a flow",
        id="worker-not-a-flow",
    ),
]


@pytest.mark.parametrize(("args", "named"), BAD_USAGE)
def test_bad_usage_is_one_line_and_exit_2(app_dir: Path, args: list[str], named: str) -> None:
    result = flowkit(app_dir, *args)
    lines = result.stderr.splitlines()
    assert (2, 1, "") == (result.returncode, len(lines), result.stdout), result.stderr
    assert lines[0].startswith(ERROR), result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.stderr


# -- rich: human output only ----------------------------------------------------------------------


def test_json_output_and_help_need_no_rich(app_dir: Path) -> None:
    """With ``rich`` unimportable, the package, the help and ``--json`` still work."""
    code = (
        "import sys; sys.modules['rich'] = None; from flowkit.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    for args in (["--help"], ["flows", "list", "--app", APP, "--json"]):
        ok(run([sys.executable, "-c", code, *args], cwd=app_dir, app_dir=app_dir))


def test_only_the_cli_imports_rich_and_only_when_printing() -> None:
    """No module outside flowkit/cli imports rich; inside, only in functions (or for types)."""
    found = []
    for path in sorted(FLOWKIT.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(node) for node in _module_level(tree.body)}
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(name.split(".")[0] == "rich" for name in names):
                in_cli = path.parent.name == "cli"
                if not in_cli or id(node) in top_level:
                    found.append(f"{path.relative_to(FLOWKIT.parent)}:{node.lineno}")
    assert [] == found


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run on import: the module's body and its ``if``/``try`` blocks,
    except ``if TYPE_CHECKING:``."""
    found: list[ast.stmt] = []
    for node in body:
        found.append(node)
        if isinstance(node, ast.If) and not (
            isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        ):
            found += _module_level(node.body) + _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            found += _module_level(node.body) + _module_level(node.orelse)
            for handler in node.handlers:
                found += _module_level(handler.body)
    return found
