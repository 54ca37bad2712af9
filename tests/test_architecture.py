"""The import floors (scripts/check_imports.py): the library as it is has no circle, no upward or cross-stack
import, no hidden smis import in a function beyond the documented ones and no module off the table; and each
rule catches its violation on a small generated tree."""
from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from smis.utils import project_root

spec = importlib.util.spec_from_file_location("check_imports", project_root() / "scripts" / "check_imports.py")
check_imports = importlib.util.module_from_spec(spec)
sys.modules["check_imports"] = check_imports                           # its dataclass looks its module up
spec.loader.exec_module(check_imports)


def test_the_library_keeps_its_floors():
    found = check_imports.violations(project_root())
    assert found == [], "\n".join(found)
    imports = check_imports.collect_imports(project_root())
    assert len(check_imports.modules(project_root())) > 40 and len(imports) > 150      # it did read the library
    # the documented in-function import is seen, and is the only one
    assert {(i.importer, i.imported) for i in imports if i.in_function} == set(check_imports.IN_FUNCTION)


@pytest.fixture
def tree(tmp_path):
    """A tree with one empty module per FLOORS entry (packages get an __init__.py): no violation yet."""
    for names in check_imports.FLOORS.values():
        for name in names:
            parts = name.removesuffix(".*").split(".")
            path = tmp_path.joinpath(*parts)
            if name.endswith(".*") or name == "smis":
                path.mkdir(parents=True, exist_ok=True)
                (path / "__init__.py").touch()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.with_suffix(".py").touch()
    assert check_imports.violations(tmp_path) == []
    return tmp_path


def write(tree, module: str, text: str) -> None:
    path = tree.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    path.write_text(text)


def test_an_upward_import_is_named_with_its_floors(tree):
    write(tree, "smis.stats", "from smis.evaluate import Columns\n")
    (v,) = check_imports.violations(tree)
    assert v.startswith("smis.stats (floor base) imports smis.evaluate (floor evaluation) at line 1: base may import "
                        "base only. Fix:")


def test_the_stacks_do_not_import_each_other(tree):
    write(tree, "smis.evaluate", "import smis.editing\n")               # evaluation -> editing
    write(tree, "smis.edit_measures", "from smis import evaluate as ev\n")   # editing -> evaluation
    write(tree, "smis.data.base", "from smis.networks import Latents\n")     # data knows nothing of networks
    found = check_imports.violations(tree)
    assert len(found) == 3
    assert any(v.startswith("smis.evaluate (floor evaluation) imports smis.editing (floor editing)") for v in found)
    assert any(v.startswith("smis.edit_measures (floor editing) imports smis.evaluate (floor evaluation)")
               for v in found)
    assert any(v.startswith("smis.data.base (floor data) imports smis.networks (floor networks)") for v in found)


def test_an_import_inside_a_function_must_be_documented(tree):
    write(tree, "smis.train", "def fit():\n    from smis.imle import IMLETrainer\n")        # the documented one
    assert check_imports.violations(tree) == []
    write(tree, "smis.editing", "import torch\n\n\ndef main():\n    import lpips\n"
                                "    from smis.sampling import chunks\n")              # lpips: not an smis import
    (v,) = check_imports.violations(tree)
    assert v.startswith("smis.editing imports smis.sampling inside a function (line 6). Fix:")


def test_a_circle_is_found_even_on_one_floor(tree):
    write(tree, "smis.utils", "from smis.viz import grid\n")
    write(tree, "smis.viz", "from smis.progress import Progress\n")
    write(tree, "smis.progress", "import smis.utils\n")
    (v,) = check_imports.violations(tree)
    assert v.startswith("import circle: smis.progress -> smis.utils -> smis.viz -> smis.progress.")
    write(tree, "smis.train", "from smis.imle import IMLETrainer\n")                     # at the top: a circle
    write(tree, "smis.imle", "from smis.train import Trainer\n")
    assert any(v.startswith("import circle: smis.imle -> smis.train") for v in check_imports.violations(tree))


def test_a_new_module_must_be_placed_and_entries_must_exist(tree):
    write(tree, "smis.networks", "from smis.networks.gan import G\n")
    (tree / "smis" / "networks" / "gan.py").write_text("")               # under a package entry: placed
    (tree / "smis" / "helpers.py").write_text("import smis.utils\n")
    (tree / "smis" / "weight_fixtures.py").unlink()
    found = check_imports.violations(tree)
    assert found[0] == "smis.helpers is on no floor. Fix: place it in FLOORS of scripts/check_imports.py."
    assert found[1].startswith("FLOORS['top'] names smis.weight_fixtures, which is no module under")
    assert len(found) == 2


def test_the_command_prints_the_floors_and_exits_1_on_a_violation(tree, capsys):
    assert check_imports.main(["--root", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "base (may import: base)" in out and "evaluation (may import:" in out and "0 violation(s)" in out
    write(tree, "smis.utils", "import smis.train\n")
    assert check_imports.main(["--root", str(tree), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "VIOLATION: smis.utils (floor base) imports smis.train (floor training)" in out and "base (" not in out


README = (project_root() / "README.md").read_text()


def test_readme_floor_table_is_the_scripts_table():
    """README's Architecture table lists, floor by floor, exactly the modules of FLOORS and the floors below its own
    that MAY_IMPORT allows."""
    section = README.split("## Architecture\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[0] in check_imports.FLOORS:
            rows[cells[0]] = cells
    assert set(rows) == set(check_imports.FLOORS)
    for floor, names in check_imports.FLOORS.items():
        listed = set(re.findall(r"`([^`]+)`", rows[floor][1]))
        assert listed == {n if n == "smis" else n.removeprefix("smis.") for n in names}, floor
        below = {f for f in re.findall(r"[a-z]+", rows[floor][2].split("(")[0])}
        assert below == set(check_imports.MAY_IMPORT[floor]) - {floor}, floor


def test_readme_layout_names_every_module_and_script():
    """Every file of smis/ (each package's modules too) and of scripts/ is named in README's Layout block."""
    layout = README.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    root = project_root()
    files = [p for p in (root / "smis").rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    files += [p for p in (root / "scripts").iterdir() if p.suffix in (".py", ".sh")]
    assert len(files) > 60
    missing = [str(p.relative_to(root)) for p in files if p.name not in layout]
    assert missing == [], f"README's Layout does not name {missing}: describe each in one line"
