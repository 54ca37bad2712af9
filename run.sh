#!/usr/bin/env bash
# smis workbook entry point.
#   bash run.sh demo     set up, then run the workbook's demo on the built-in SynthScenes dataset
#   bash run.sh test     set up, then run the whole test suite on SMIS_TEST_WORKERS (default 2) pytest-xdist workers
#                        (extra args go to pytest)
#   bash run.sh lab      set up, then start JupyterLab on the notebooks
#   bash run.sh lint     set up, then lint the code (ruff, settings in pyproject.toml)
#   bash run.sh setup    only create / reuse the environment
# The virtualenv lives outside the clone, keyed by a hash of requirements.txt, so clones and CI reuse it:
#   ${SMIS_VENV_DIR:-$HOME/.cache/smis}/venv-<hash>   (override the whole path with SMIS_VENV)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$PWD
HASH=$(sha256sum requirements.txt | cut -c1-12)
VENV=${SMIS_VENV:-${SMIS_VENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smis}/venv-$HASH}
PY=${SMIS_PYTHON:-python3}

setup() {
  mkdir -p "$(dirname "$VENV")"
  (
    flock 9  # one installer at a time; the others wait, then reuse
    if [ ! -f "$VENV/.smis-complete" ]; then
      echo "[smis] creating $VENV (first run: installs torch and friends, several minutes)" >&2
      rm -rf "$VENV"
      "$PY" -m venv "$VENV"
      "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2 || true
      "$VENV/bin/python" -m pip install --quiet -r requirements.txt >&2
      touch "$VENV/.smis-complete"
    fi
    # mit-semseg 1.0.0 (CSAIL's model code, pure Python): only tests/test_real_segmenters.py imports it, to check
    # smis.real_segmenters against the package's own forward. --no-deps: its opencv-python (79 MB) and yacs serve
    # its data pipeline and configs, which nothing here uses. Offline, that test is skipped.
    if ! compgen -G "$VENV/lib/python*/site-packages/mit_semseg" >/dev/null; then
      "$VENV/bin/python" -m pip install --quiet --no-deps mit-semseg==1.0.0 >&2 \
        || echo "[smis] mit-semseg not installed (offline?): its comparison test will be skipped" >&2
    fi
  ) 9>"$VENV.lock"
  # A Jupyter kernel named "smis" that runs this environment's Python.
  "$VENV/bin/python" -m ipykernel install --user --name smis --display-name "Python (smis)" >/dev/null 2>&1
  export PATH="$VENV/bin:$PATH" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  export MPLBACKEND=${MPLBACKEND:-Agg}
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup; echo "[smis] environment ready: $VENV" ;;
  demo) setup; exec python -m smis.reproduce --profile demo "$@" ;;
  test) setup; exec python -m pytest -m "slow or not slow" -n "${SMIS_TEST_WORKERS:-2}" --dist worksteal "$@" ;;
  lint) setup; exec ruff check "$@" ;;
  lab)
    setup; unset MPLBACKEND
    root_flag=(); [ "$(id -u)" -eq 0 ] && root_flag=(--allow-root)  # containers and CI run as root
    exec jupyter lab --notebook-dir="$ROOT" "${root_flag[@]}" "$@" ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
