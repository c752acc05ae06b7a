"""``if flow.patched("id"):`` and ``flow.deprecate_patch("id")``: code changed under live runs.

A patch compiles to a ``branch`` node with ``params["patch"]`` instead of a
condition; the core takes its ``true`` edge when the run recorded the patch id
at its start (see :func:`flowkit.core.start_run`). The ``else`` block, the code
older runs follow, is compiled first so that its nodes keep the ids they had
before the patch was written. The blueprint's metadata lists the patch ids
(``patches``) and those deprecated (``deprecated_patches``).
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from ._compile_control import Control
from ._compile_resolve import callee_kind

if TYPE_CHECKING:
    from ._compile_graph import Port


class Patches(Control):
    """Patch branches and deprecated patches."""

    def stmt_If(self, node: ast.If, ports: list[Port]) -> list[Port]:
        patch = self.patch_id(node.test, "patched")
        if patch is None:
            return super().stmt_If(node, ports)
        self.check_patch(node, patch, self.deprecated)
        self.patches.add(patch)
        params = {"patch": patch}
        branch = self.add(self.graph.new_id(f"patch:{patch}"), "branch", params, ports)
        old = self.block(node.orelse, [(branch, "false")])  # first: its node ids stay as they were
        new = self.block(node.body, [(branch, "true")])
        return new + old

    def stmt_Expr(self, node: ast.Expr, ports: list[Port]) -> list[Port]:
        patch = self.patch_id(node.value, "deprecate_patch")
        if patch is None:
            return super().stmt_Expr(node, ports)
        self.check_patch(node, patch, self.patches)
        self.deprecated.add(patch)
        return ports

    def patch_id(self, node: ast.expr, name: str) -> str | None:
        """The id of ``flow.<name>("id")`` when ``node`` is that call, else ``None``."""
        if not isinstance(node, ast.Call):
            return None
        if callee_kind(self.resolver.resolve(node.func)) != f"primitive:{name}":
            return None
        bound = self.bind_primitive(name, node)
        patch = self.text(bound["patch_id"], f"flow.{name}'s id", required=True)
        assert patch is not None  # required
        return patch

    def check_patch(self, node: ast.stmt, patch: str, other: set[str]) -> None:
        if patch in other:
            raise self.error(
                node,
                f"patch {patch!r} is both patched and deprecated in this flow",
                f'keep `if flow.patched("{patch}"):` while runs started before it are left, '
                f'then replace it and its else block by flow.deprecate_patch("{patch}")',
            )
