"""A static scan of a submission for code that tampers with grading.

The checks run in the student's own kernel, so a solution cell can try to switch them off
(``tlkit.grading._fail = lambda m: None``), replace them (``tlkit.trainable_summary = ...``) or
read the expected answer from the checker's frame (``inspect.stack()``). This module parses each
code cell with :mod:`ast` (it never runs anything) and reports such lines, so the instructor sees
them in the grade report and the student in the feedback. It is the second of two layers: the
checks themselves must also resist tampering (``tlkit.grading``); the scan makes attempts visible.

What is reported (``Finding.kind``):

* ``assigns into a module``: assigning or deleting an attribute of ``tlkit``, ``torch`` or
  ``builtins`` (however imported: ``from tlkit import grading as g; g._fail = ...`` included);
* ``setattr on a module``: ``setattr``/``delattr`` whose target is one of those modules;
* ``sys.modules``: any use of ``sys.modules``;
* ``frame inspection``: ``inspect.stack``/``currentframe``/``getouterframes``/``trace``,
  ``sys._getframe``, ``sys.settrace``/``setprofile``, ``gc.get_referrers``/``get_objects``, and
  the frame attributes ``f_back``, ``f_locals``, ``f_globals``, ``tb_frame``;
* ``importlib.reload``;
* ``builtins``: rebinding a built-in a test relies on (``isinstance = ...``) or touching
  ``__builtins__``;
* ``dynamic code``: ``exec``, ``eval``, ``compile``, ``__import__`` (the scan cannot see inside).

Cells nbgrader overwrites from the gradebook before running (locked cells and test cells) are not
scanned: what a student types there never runs.

Example:
    >>> from tlkit.classroom.scan import scan_source
    >>> [f.kind for f in scan_source("import tlkit\\ntlkit.grading._fail = lambda m: None")]
    ['assigns into a module']
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Finding", "scan_source", "scan_notebook", "format_findings"]

# Module roots whose attributes a submission has no business changing.
PROTECTED = ("tlkit", "torch", "builtins", "nbgrader")
FRAME_CALLS = {
    "inspect.stack", "inspect.currentframe", "inspect.getouterframes", "inspect.getinnerframes",
    "inspect.trace", "sys._getframe", "sys.settrace", "sys.setprofile", "gc.get_referrers",
    "gc.get_objects", "gc.get_referents", "traceback.walk_stack",
}
FRAME_ATTRS = {"f_back", "f_locals", "f_globals", "tb_frame", "gi_frame", "cr_frame"}
DYNAMIC = {"exec", "eval", "compile", "__import__"}
# Built-ins the checks and hidden tests use; rebinding one in the notebook fools a test cell.
SHADOWED = {
    "isinstance", "issubclass", "len", "abs", "all", "any", "print", "type", "round", "float", "int",
    "bool", "hasattr", "getattr", "setattr", "callable", "AssertionError", "Exception",
    "NotImplementedError", "globals", "exec", "eval", "__import__",
}


@dataclass(frozen=True)
class Finding:
    """One suspicious line: where it is, what kind of tampering, and the line itself."""

    cell: int | None        # the cell's number in the notebook, counting from 1 (None for a bare source)
    grade_id: str | None    # the nbgrader grade_id of that cell, if it has one
    line: int               # line number inside the cell (1-based)
    kind: str
    code: str

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else "line"
        where += f" ({self.grade_id})" if self.grade_id else ""
        return f"{where}, line {self.line}: {self.kind}: {self.code}"


def _strip_magics(source: str) -> str:
    """IPython magics and shell escapes become ``pass`` so the rest of the cell parses."""
    out = []
    for line in source.splitlines():
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        out.append(indent + "pass" if stripped.startswith(("%", "!")) else line)
    return "\n".join(out)


class _Scanner(ast.NodeVisitor):
    def __init__(self, aliases: dict[str, str]):
        self.aliases = aliases          # local name -> dotted module path it stands for
        self.hits: list[tuple[int, str]] = []

    # -- names -------------------------------------------------------------------------------
    def _dotted(self, node: ast.AST) -> str | None:
        """``a.b.c`` with its root name resolved through the imports seen so far, else None."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Subscript):  # sys.modules["tlkit.grading"].x
            inner = self._dotted(node.value)
            return f"{inner}[]" + ("." + ".".join(reversed(parts)) if parts else "") if inner else None
        if not isinstance(node, ast.Name):
            return None
        root = self.aliases.get(node.id, node.id if node.id == "__builtins__" else None)
        if root is None:
            return None
        return ".".join([root, *reversed(parts)])

    @staticmethod
    def _protected(dotted: str | None) -> bool:
        return bool(dotted) and (dotted.split(".")[0] in PROTECTED or dotted.startswith(("sys.modules", "__builtins__")))

    def _hit(self, node: ast.AST, kind: str) -> None:
        self.hits.append((getattr(node, "lineno", 1), kind))

    # -- imports -----------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.asname:
                self.aliases[a.asname] = a.name
            else:
                root = a.name.split(".")[0]
                self.aliases[root] = root
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            for a in node.names:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                if node.module == "importlib" and a.name == "reload":
                    self._hit(node, "importlib.reload")
        self.generic_visit(node)

    # -- assignments -------------------------------------------------------------------------
    def _target(self, target: ast.AST, node: ast.AST) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._target(t, node)
        elif isinstance(target, (ast.Attribute, ast.Subscript)):
            dotted = self._dotted(target)
            if dotted and dotted.startswith("__builtins__"):
                self._hit(node, "builtins")
            elif self._protected(dotted):
                self._hit(node, "builtins" if dotted.startswith("builtins.") else "assigns into a module")
        elif isinstance(target, ast.Name) and target.id in SHADOWED:
            self._hit(node, "builtins")

    def visit_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._target(t, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._target(node.target, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._target(node.target, node)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._target(t, node)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name in SHADOWED:
            self._hit(node, "builtins")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    # -- calls and attributes ----------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        func = self._dotted(node.func) if isinstance(node.func, ast.Attribute) else None
        name = node.func.id if isinstance(node.func, ast.Name) else None
        resolved = func or (self.aliases.get(name, name) if name else None)
        if resolved in ("setattr", "delattr", "builtins.setattr", "builtins.delattr") and node.args:
            target = node.args[0]
            dotted = self._dotted(target) if isinstance(target, (ast.Name, ast.Attribute, ast.Subscript)) else None
            if isinstance(target, ast.Name) and target.id in self.aliases:
                dotted = self.aliases[target.id]
            if self._protected(dotted) or (isinstance(target, ast.Call) and _call_name(target) in ("__import__", "importlib.import_module")):
                self._hit(node, "setattr on a module")
        elif resolved in FRAME_CALLS:
            self._hit(node, "frame inspection")
        elif resolved in ("importlib.reload", "imp.reload"):
            self._hit(node, "importlib.reload")
        elif name in DYNAMIC and name not in self.aliases:
            self._hit(node, "dynamic code")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in FRAME_ATTRS:
            self._hit(node, "frame inspection")
        elif node.attr == "modules" and self._dotted(node) == "sys.modules":
            self._hit(node, "sys.modules")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "__builtins__":
            self._hit(node, "builtins")


def _call_name(node: ast.Call) -> str | None:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f"{f.value.id}.{f.attr}"
    return None


def scan_source(source: str, cell: int | None = None, grade_id: str | None = None,
                aliases: dict[str, str] | None = None) -> list[Finding]:
    """Findings in one piece of Python source (a cell). ``aliases`` carries the imports of the
    cells before it (updated in place); a cell that does not parse has no findings.

    >>> [f.kind for f in scan_source("import inspect\\nframes = inspect.stack()")]
    ['frame inspection']
    """
    aliases = {} if aliases is None else aliases
    try:
        tree = ast.parse(_strip_magics(source))
    except SyntaxError:
        return []
    scanner = _Scanner(aliases)
    scanner.visit(tree)
    lines = source.splitlines()
    seen, out = set(), []
    for line, kind in scanner.hits:
        if (line, kind) in seen:
            continue
        seen.add((line, kind))
        code = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        out.append(Finding(cell, grade_id, line, kind, code[:160]))
    return out


def _overwritten(cell: dict) -> bool:
    """nbgrader replaces these cells with the gradebook's version before running them."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("locked")) or (bool(meta.get("grade")) and not meta.get("solution"))


def scan_notebook(notebook: str | Path | dict) -> list[Finding]:
    """Findings in every code cell of a notebook that the student controls.

    ``notebook`` is a path to an ``.ipynb`` file or the notebook as a dict (nbformat 4).

    >>> nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "import sys\\nsys.modules['tlkit']"}]}
    >>> [str(f) for f in scan_notebook(nb)]
    ["cell 1, line 2: sys.modules: sys.modules['tlkit']"]
    """
    if not isinstance(notebook, dict):
        notebook = json.loads(Path(notebook).read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}
    findings: list[Finding] = []
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if _overwritten(cell):
            scan_source(source, aliases=aliases)  # still learn its imports
            continue
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        findings += scan_source(source, index + 1, grade_id, aliases)
    return findings


def format_findings(findings: list[Finding], audience: str = "instructor") -> str:
    """The findings as Markdown, for the grade report (``audience="instructor"``) or for the
    student's feedback (``audience="student"``)."""
    if not findings:
        return "No tampering found by the static scan."
    head = ("**The automatic review found code that changes how your work is checked.** "
            "Your instructor sees these lines and may review your grade:\n"
            if audience == "student" else f"{len(findings)} suspicious line(s):\n")
    return head + "\n".join(f"- {f.kind}: cell {f.cell}, line {f.line}: `{f.code}`" for f in findings)
