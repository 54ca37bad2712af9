"""smis.reproduce.profiles: every profile names built notebooks and their declared parameters and writes only under
the run's folder; every numbered notebook declares the inputs it reads (NOTEBOOK_INPUTS) and every folder parameter
is either written (WRITTEN_FOLDERS) or declared as read."""
from dataclasses import fields

import pytest

from smis.reproduce.parameters import declared_parameters
from smis.reproduce.plan import plan_profile
from smis.reproduce.profiles import NOTEBOOK_INPUTS, PROFILES, WRITTEN_FOLDERS
from smis.utils import project_root

ROOT = project_root()


def _params_of(stem: str) -> list[str]:
    return declared_parameters(ROOT / "notebooks" / f"{stem}.ipynb")


def _numbered_notebooks() -> list:
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(paths) >= 6, paths                                       # the notebooks, not an empty glob
    return paths


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profiles_name_existing_notebooks_and_parameters(profile):
    for stem, params in PROFILES[profile].items():
        assert (ROOT / "notebooks" / f"{stem}.ipynb").exists(), f"{profile}: notebook {stem} is not built"
        unknown = set(params) - set(_params_of(stem))
        assert not unknown, f"{profile}: {stem} has no parameters {sorted(unknown)}"


def test_every_notebook_declares_its_inputs():
    """Each numbered notebook has its entry in NOTEBOOK_INPUTS (and no entry names a notebook that is not there), and
    each parameter the entry names is one the notebook declares: a renamed parameter fails here, not in a run."""
    paths = _numbered_notebooks()
    assert sorted(NOTEBOOK_INPUTS) == [p.stem for p in paths]
    for path in paths:
        entry = NOTEBOOK_INPUTS[path.stem]
        named = [v for f in fields(entry) for v in (getattr(entry, f.name) if f.name == "model_files"
                                                    else [getattr(entry, f.name)]) if v]
        assert named, path.name                                         # each reads something
        undeclared = set(named) - set(declared_parameters(path))
        assert not undeclared, f"{path.name} declares no {sorted(undeclared)}"
    assert NOTEBOOK_INPUTS["02_train"].trains_run == "RUN_DIR"
    assert NOTEBOOK_INPUTS["05_ablations"].trains_if == "TRAIN_STEPS"


def test_folder_parameters_are_classified():
    """Every *_DIR / *_ROOT parameter is known as written (kept under the run's folder) or declared as read (the
    notebook's data_root in NOTEBOOK_INPUTS); a new one must be classified, or a run could write outside --out
    unnoticed."""
    for path in _numbered_notebooks():
        names = declared_parameters(path)
        assert "OUT_DIR" in names, path.name
        known = set(WRITTEN_FOLDERS) | {NOTEBOOK_INPUTS[path.stem].data_root}
        folders = {n for n in names if n.endswith(("_DIR", "_ROOT"))}
        assert folders <= known, (f"{path.name}: classify {sorted(folders - known)} in WRITTEN_FOLDERS or as its "
                                  "data_root in NOTEBOOK_INPUTS (smis/reproduce/profiles.py)")


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("relative", [False, True])
def test_every_profile_writes_only_under_out(tmp_path, profile, relative):
    """Each folder a notebook of the profile writes (its declared WRITTEN_FOLDERS) is given and lies under
    <out>/<profile>, for an absolute --out and for the default, repository-relative one."""
    out_root = "outputs/some_run" if relative else tmp_path
    out, plan = plan_profile(profile, out_root=out_root)
    assert out == (ROOT / "outputs" / "some_run" / profile if relative else tmp_path / profile)
    assert [stem for stem, _ in plan] == list(PROFILES[profile])
    for stem, params in plan:
        written = [n for n in WRITTEN_FOLDERS if n in _params_of(stem)]
        assert "OUT_DIR" in written and (stem != "01_prepare_data" or "DATA_DIR" in written), stem
        for name in written:
            path = (ROOT / params[name]).resolve()
            assert path.is_relative_to(out.resolve()), f"{profile}: {stem}.{name} = {params[name]} is outside {out}"
        assert set(params) <= set(_params_of(stem)), stem            # only declared parameters go to papermill
    assert not (tmp_path / profile).exists() and not (ROOT / "outputs" / "some_run").exists()  # planning writes nothing
