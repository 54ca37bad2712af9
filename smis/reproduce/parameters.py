"""A notebook's parameters, read from its cell tagged `parameters`, and reproduce's `--set` items.

Owns what reproduce knows of a notebook without running it: the names its parameters cell declares
(`declared_parameters`), their literal defaults (`default_parameters`), the types a value must fit
(`parameter_types`, `value_fits`), the parameters a SMOKE run replaces (`smoke_replaced`, `smoke_report`), and the
parsing of `--set NAME=VALUE` / `--set NN.NAME=VALUE` (`parse_set_arguments`).
"""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

from smis.options import parse_assignment


def parse_set_arguments(items: list[str] | None,   # `--set` items: NAME=VALUE or NN.NAME=VALUE
                        ) -> list[tuple[str, str, object]]:
    """`NAME=VALUE` / `NN.NAME=VALUE` -> [(notebook prefix or "", NAME, value)]; VALUE as JSON, else a string."""
    out = []
    for item in items or []:
        kv = parse_assignment(item)
        if kv is None:
            raise SystemExit(f"--set {item!r}: write NAME=VALUE or NN.NAME=VALUE (e.g. N_TEST=50, 05.K=20)")
        prefix, _, name = kv[0].rpartition(".")
        out.append((prefix, name, kv[1]))
    return out


def _parameters_cell(notebook: Path,   # an .ipynb file
                     ) -> ast.Module:
    """The parsed source of the notebook's one cell tagged `parameters`; SystemExit naming the file when the cell
    is missing, doubled or not Python."""
    cells = [c for c in json.loads(notebook.read_text())["cells"]
             if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{notebook}: {len(cells)} cells tagged 'parameters', reproduce needs exactly one. Fix: tag "
                         "the cell of parameters (`# %% tags=[\"parameters\"]` in notebooks/src) and rebuild.")
    source = cells[0]["source"]
    source = "".join(source) if isinstance(source, list) else source
    try:
        return ast.parse(source)
    except SyntaxError as e:
        raise SystemExit(f"{notebook}: its parameters cell is not Python ({e.msg}, line {e.lineno}). "
                         "Fix the cell.") from None


def declared_parameters(notebook: str | Path,   # an .ipynb file
                        ) -> list[str]:
    """The names the notebook's one cell tagged `parameters` assigns at its top level, in order
    (papermill overrides exactly these). SystemExit naming the file when the cell is missing, doubled
    or not Python."""
    names: list[str] = []
    for node in _parameters_cell(Path(notebook)).body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        for t in targets:
            for n in (t.elts if isinstance(t, ast.Tuple) else [t]):
                if isinstance(n, ast.Name) and n.id not in names:
                    names.append(n.id)
    return names


def default_parameters(notebook: str | Path,   # an .ipynb file
                       ) -> dict:
    """The values the notebook's `parameters` cell assigns, for the names assigned a literal (numbers, strings,
    None, lists, dicts); what a run gets for a parameter its profile does not set."""
    out = {}
    for node in _parameters_cell(Path(notebook)).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) and node.value is not None else None
        if isinstance(target, ast.Name):
            try:
                out[target.id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


_TYPE_NAMES = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "list": list, "None": type(None)}


def _annotation_types(node: ast.expr) -> tuple[type, ...] | None:
    """`int`, `str | None`, `Optional[int]` ... as a tuple of types; None when not one of these simple forms."""
    if isinstance(node, ast.Constant) and node.value is None:
        return (type(None),)
    if isinstance(node, ast.Name) and node.id in _TYPE_NAMES:
        return (_TYPE_NAMES[node.id],)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _annotation_types(node.left), _annotation_types(node.right)
        return left + right if left is not None and right is not None else None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):   # "Optional[int]": papermill reads these
        try:
            return _annotation_types(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return None
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in ("Optional", "Union"):
        parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        found = [_annotation_types(n) for n in parts]
        if any(f is None for f in found):
            return None
        return sum(found, ()) + ((type(None),) if node.value.id == "Optional" else ())
    return None


def parameter_types(notebook: str | Path,   # an .ipynb file
                    ) -> dict[str, tuple[type, ...]]:
    """What each parameter of the notebook's `parameters` cell accepts: its annotation (`STEPS: "Optional[int]" = 300`,
    a string so that papermill also reads the line; `int | None` and `Union[...]` work too),
    else the type of its literal default (a float also takes an int). Parameters whose default is None or not a
    literal, and unusual annotations, are not listed (any value goes)."""
    types: dict[str, tuple[type, ...]] = {}
    for node in _parameters_cell(Path(notebook)).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found = _annotation_types(node.annotation)
            if found is not None:
                types[node.target.id] = found
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                default = ast.literal_eval(node.value)
            except ValueError:
                continue
            if default is not None and type(default) in _TYPE_NAMES.values():
                types[node.targets[0].id] = (int, float) if type(default) is float else (type(default),)
    return types


def value_fits(value,                      # a value as --set parsed it (JSON, else a string)
               types: tuple[type, ...],    # what the parameter accepts (parameter_types)
               ) -> bool:
    """Whether `value` is one of `types`: bool only where bool is named, finite numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, tuple(t for t in types if t is not bool))


def smoke_replaced(notebook: str | Path,   # an .ipynb file
                   ) -> set[str]:
    """The parameters the notebook assigns anew in a top-level `if SMOKE:` block without reading their value
    (`STEPS, BATCH = 4, 2`): under SMOKE a value given for them is not used. (`N = min(N, 2)` reads it: not listed.)"""
    nb = json.loads(Path(notebook).read_text())
    names: set[str] = set()
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "SMOKE"):
                continue
            for stmt in node.body:
                if not isinstance(stmt, ast.Assign):
                    continue
                read = {n.id for n in ast.walk(stmt.value) if isinstance(n, ast.Name)}
                for t in stmt.targets:
                    names |= {n.id for n in (t.elts if isinstance(t, ast.Tuple) else [t])
                              if isinstance(n, ast.Name) and n.id not in read}
    return names


def smoke_report(stem: str,                 # the notebook's stem (NN_topic)
                 params: dict,              # the parameters the run gives it
                 notebook: str | Path,      # its .ipynb file
                 ) -> str | None:
    """A line naming the given parameters the notebook replaces because SMOKE is on (None when there are none)."""
    smoke = params.get("SMOKE", default_parameters(notebook).get("SMOKE"))
    lost = sorted(set(params) & smoke_replaced(notebook)) if smoke is True else []
    if not lost:
        return None
    return (f"{stem}: SMOKE=True sets {', '.join(lost)} itself, so the values given here are not used "
            f"({', '.join(f'{n}={params[n]!r}' for n in lost)}). Fix: --set {stem[:2]}.SMOKE=false to use them.")


