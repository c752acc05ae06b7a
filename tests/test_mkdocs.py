"""The documentation site builds cleanly, and what the docs promise holds.

* ``mkdocs build --strict`` (MkDocs Material + mkdocstrings) succeeds with no
  warning, into a temp dir;
* every page of ``docs/`` is in the nav, and every ``FlowkitError`` subclass
  flowkit defines has an entry in the error reference;
* the diagram on the home page is what its example prints;
* the getting-started walkthrough works as written: its ``onboarding.py`` is
  served by two ``python -m flowkit.worker`` processes (the commands of step 4,
  on the default SQLite queue + store), its ``submit.py`` completes a run, and
  both workers drain on SIGTERM and exit 0.
(The Python blocks themselves run in ``tests/test_docs.py``.)
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import yaml

import flowkit

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"(<!--\s*no-run[^>]*-->\s*)?```(\w+)\n(.*?)```", re.S)
TIMEOUT = 120  # seconds for a build or a script


def fences(page: str, language: str) -> list[str]:
    return [m.group(3) for m in FENCE.finditer((DOCS / page).read_text()) if m.group(2) == language]


class _Loader(yaml.SafeLoader):
    """Reads mkdocs.yml, ignoring its ``!!python/name:`` tags."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


class TestBuild:
    """``mkdocs build --strict`` succeeds and says nothing worse than INFO."""

    def test_strict_build(self, tmp_path: Path) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        )
        output = done.stdout + done.stderr
        assert 0 == done.returncode, output
        assert [] == [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
        api = (tmp_path / "site" / "api" / "index.html").read_text()
        for name in ("flowkit.Runtime", "flowkit.RunResult", "flowkit.testing.simulate"):
            assert f'id="{name}"' in api

    def test_every_page_is_in_the_nav(self) -> None:
        config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)
        in_nav = sorted(page for entry in config["nav"] for page in entry.values())
        assert sorted(p.name for p in DOCS.glob("*.md")) == in_nav


def _flowkit_errors() -> set[str]:
    """Names of every FlowkitError subclass defined in the flowkit package."""
    for info in pkgutil.walk_packages(flowkit.__path__, "flowkit."):
        if not info.name.endswith("__main__"):  # importing that would start a worker
            importlib.import_module(info.name)
    found, todo = set(), [flowkit.FlowkitError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("flowkit"):
            found.add(cls.__name__)
        todo += cls.__subclasses__()
    return found


class TestErrorReference:
    """docs/errors.md has an entry for every FlowkitError subclass."""

    def test_every_error_has_an_entry(self) -> None:
        headings = set(re.findall(r"^###? (\w+)$", (DOCS / "errors.md").read_text(), re.M))
        assert [] == sorted(_flowkit_errors() - headings)


class TestHomePage:
    """The diagram on docs/index.md is what the example above it prints."""

    def test_diagram_matches(self, tmp_path: Path) -> None:
        script = tmp_path / "home.py"
        script.write_text(fences("index.md", "python")[0])
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            cwd=tmp_path,
        )
        assert 0 == done.returncode, done.stderr
        assert fences("index.md", "mermaid")[0].strip() == done.stdout.strip()


class TestGettingStarted:
    """The walkthrough: onboarding.py on two workers, submit.py completes a run, clean stop."""

    def test_walkthrough(self, tmp_path: Path) -> None:
        onboarding, submit = fences("getting-started.md", "python")
        (tmp_path / "onboarding.py").write_text(onboarding)
        (tmp_path / "submit.py").write_text(submit)
        commands = [
            shlex.split(line.partition("#")[0])
            for block in fences("getting-started.md", "bash")
            for line in block.splitlines()
            if "-m flowkit.worker" in line
        ]
        assert 2 == len(commands)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        workers: list[subprocess.Popen[bytes]] = []
        try:
            for index, command in enumerate(commands):
                with (tmp_path / f"worker-{index}.log").open("wb") as log:
                    worker = subprocess.Popen(
                        [sys.executable, *command[1:]],  # this environment's python
                        cwd=tmp_path,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group, killed alone if need be
                    )
                workers.append(worker)
            done = subprocess.run(
                [sys.executable, "submit.py"],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
            logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("worker-*.log")))
            assert 0 == done.returncode, done.stderr + logs
            assert "completed {'account': 'acct-ada', 'status': 'active'" in done.stdout
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            assert [0, 0] == [worker.wait(TIMEOUT) for worker in workers], logs
        finally:
            for worker in workers:
                if worker.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()
