"""The library's import floors, checked: every smis import goes down (or sideways within a floor, without a circle).

    python scripts/check_imports.py            # prints the graph per floor; exit 1 on a violation
    python scripts/check_imports.py --quiet    # violations only

Every `smis/**/*.py` is parsed (AST, nothing is imported) and every `smis` import collected, at the top of a
module and inside functions. `FLOORS` places each module on a floor and `MAY_IMPORT` says which floors a floor
may import; a module may import modules of its own floor as long as no circle forms. Violations:

- a circle between modules (A imports B imports ... A; the imports `IN_FUNCTION` allows are left out: they are
  how such a circle is avoided);
- an import of a floor that is not allowed (upward, or across the stacks: evaluation and editing sit side by side);
- an smis import inside a function, unless `IN_FUNCTION` lists it with its reason (imports of optional heavy
  third-party packages are not smis imports and are not checked);
- a module missing from `FLOORS` (a new module must be placed), or a `FLOORS` entry naming no module.

`tests/test_architecture.py` runs `violations()` on the repository and on small trees that break each rule.
"""
from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# floor -> its modules. A name ending in ".*" is a package: the package and every module under it.
FLOORS: dict[str, tuple[str, ...]] = {
    "base": ("smis.utils", "smis.config", "smis.progress", "smis.rundir", "smis.stats", "smis.viz"),
    "data": ("smis.data.*",),                        # data knows nothing of networks
    "networks": ("smis.networks.*",),
    # smis.sampling: the trainer's TensorBoard grid and cIMLE's training draw their codes through it
    "training": ("smis.backbones", "smis.losses", "smis.objective", "smis.options", "smis.build", "smis.checkpoint",
                 "smis.runlog", "smis.train", "smis.imle", "smis.official", "smis.capabilities", "smis.sampling"),
    "measuring": ("smis.metrics", "smis.segmenter", "smis.real_segmenters", "smis.factors", "smis.diagnostics"),
    "evaluation": ("smis.evaluate", "smis.tables", "smis.comparison", "smis.curves", "smis.models", "smis.study",
                   "smis.findings", "smis.eval_figures"),
    "editing": ("smis.editing", "smis.edit_measures", "smis.edit_figures", "smis.widgets"),
    "top": ("smis.reproduce.*", "smis.weight_fixtures", "smis"),   # smis: the package, re-exports load_official
}
BELOW_MEASURING = ("base", "data", "networks", "training", "measuring")
MAY_IMPORT: dict[str, tuple[str, ...]] = {           # floor -> the floors it may import (its own included)
    "base": ("base",),
    "data": ("base", "data"),
    "networks": ("base", "networks"),
    "training": ("base", "data", "networks", "training"),
    "measuring": BELOW_MEASURING,
    "evaluation": (*BELOW_MEASURING, "evaluation"),   # not editing
    "editing": (*BELOW_MEASURING, "editing"),         # not evaluation
    "top": tuple(FLOORS),
}
# (importer, imported) -> why the import sits inside a function
IN_FUNCTION: dict[tuple[str, str], str] = {
    ("smis.train", "smis.imle"): "Trainer hands a cimle run to smis.imle's IMLETrainer, which subclasses Trainer "
                                 "(a top-level import would be a circle)",
}


@dataclass(frozen=True)
class Import:
    importer: str          # the module holding the import statement
    imported: str          # the smis module it imports
    line: int
    in_function: bool


def module_name(path: Path, root: Path) -> str:
    """smis/data/base.py -> smis.data.base; smis/data/__init__.py -> smis.data."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """{module name: file} of every smis/**/*.py under `root`."""
    return {module_name(p, root): p for p in sorted((root / "smis").rglob("*.py"))}


def _resolve(name: str, known: set[str]) -> str:
    """The smis module an imported name lives in: the longest known prefix (smis.data.synthetic.CLASSES ->
    smis.data.synthetic)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in known:
            return ".".join(parts[:n])
    return name


def collect_imports(root: Path = ROOT) -> list[Import]:
    """Every smis import of every module, top level and inside functions (self-imports left out: smis.train's
    `__main__` block imports its own module)."""
    found = modules(root)
    known = set(found)
    out = []
    for mod, path in found.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                names = []
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:                                    # relative: from the module's package
                        up = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                        base = ".".join(up + ([base] if base else []))
                    names = [f"{base}.{a.name}" for a in child.names]  # a submodule, or a name in `base`
                for name in names:
                    if name == "smis" or name.startswith("smis."):
                        target = _resolve(name, known)
                        if target != mod:
                            out.append(Import(mod, target, child.lineno, in_function))
                visit(child, inner)
        visit(ast.parse(path.read_text(), str(path)), False)
    return list(dict.fromkeys(out))                                    # one per statement and module


def floor_of(module: str) -> str | None:
    """The floor `FLOORS` places `module` on (None: not placed)."""
    for floor, names in FLOORS.items():
        for n in names:
            if module == n or (n.endswith(".*") and (module == n[:-2] or module.startswith(n[:-1]))):
                return floor
    return None


def circles(imports: list[Import]) -> list[list[str]]:
    """The import circles between modules, each as [a, b, ..., a] (one per strongly connected group), leaving out
    the in-function imports `IN_FUNCTION` allows."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if not (i.in_function and (i.importer, i.imported) in IN_FUNCTION):
            graph.setdefault(i.importer, set()).add(i.imported)
    index, low, stack, on, groups = {}, {}, [], set(), []

    def strong(v: str) -> None:                                        # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v), on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return [g + [g[0]] for g in groups]


def violations(root: Path = ROOT, imports: list[Import] | None = None) -> list[str]:
    """Every broken rule of the tree under `root`, as sentences naming the module, the import and the fix."""
    imports = collect_imports(root) if imports is None else imports
    found = modules(root)
    out = []
    for mod in found:
        if floor_of(mod) is None:
            out.append(f"{mod} is on no floor. Fix: place it in FLOORS of scripts/check_imports.py.")
    for floor, names in FLOORS.items():
        for n in names:
            if not any(m == n or (n.endswith(".*") and (m == n[:-2] or m.startswith(n[:-1]))) for m in found):
                out.append(f"FLOORS[{floor!r}] names {n}, which is no module under {root / 'smis'}. Fix: remove or "
                           "rename the entry.")
    for i in imports:
        a, b = floor_of(i.importer), floor_of(i.imported)
        if a is not None and b is not None and b not in MAY_IMPORT[a]:
            out.append(f"{i.importer} (floor {a}) imports {i.imported} (floor {b}) at line {i.line}: {a} may import "
                       f"{', '.join(MAY_IMPORT[a])} only. Fix: move what it needs down to a floor it may import.")
        if i.in_function and (i.importer, i.imported) not in IN_FUNCTION:
            out.append(f"{i.importer} imports {i.imported} inside a function (line {i.line}). Fix: import it at the "
                       "top, or list it in IN_FUNCTION of scripts/check_imports.py with the reason.")
    for c in circles(imports):
        out.append(f"import circle: {' -> '.join(c)}. Fix: move what one of them needs so imports go one way.")
    return out


def report(root: Path = ROOT) -> str:
    """The import graph per floor: each module and the smis modules it imports, with their floors."""
    imports = collect_imports(root)
    lines = []
    for floor in FLOORS:
        lines.append(f"{floor} (may import: {', '.join(MAY_IMPORT[floor])})")
        for mod in sorted(m for m in modules(root) if floor_of(m) == floor):
            deps = sorted({(i.imported, i.in_function) for i in imports if i.importer == mod})
            shown = ", ".join(f"{d}{' (in a function)' if f else ''} [{floor_of(d)}]" for d, f in deps) or "-"
            lines.append(f"  {mod} -> {shown}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="the repository holding smis/")
    p.add_argument("--quiet", action="store_true", help="print the violations only")
    a = p.parse_args(argv)
    root = Path(a.root)
    if not a.quiet:
        print(report(root))
    found = violations(root)
    for v in found:
        print("VIOLATION:", v)
    print(f"{len(modules(root))} modules, {len(found)} violation(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
