#!/usr/bin/env bash
# Make sure a headless Chromium is present for tests/test_browser.py (Debian's `chromium` package).
#   bash scripts/install_browser.sh      # idempotent; quiet when chromium is already there
# Playwright drives this system browser (executable_path=/usr/bin/chromium); we never download
# Playwright's own browser builds. Installing needs root (or passwordless sudo) and apt-get; when
# neither is available the script says so and exits 0, and the browser test skips with the reason.
set -euo pipefail

BROWSER=${SMIS_CHROMIUM:-/usr/bin/chromium}
if [ -x "$BROWSER" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[smis] $BROWSER missing and apt-get not available: install Chromium by hand to run tests/test_browser.py" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "[smis] $BROWSER missing and not root (no passwordless sudo): run 'sudo apt-get install chromium'" >&2
    exit 0
  fi
fi
echo "[smis] installing chromium with apt-get (for the browser test)" >&2
export DEBIAN_FRONTEND=noninteractive
LOG=$(mktemp)
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >"$LOG" 2>&1; then
  tail -n 20 "$LOG" >&2
  rm -f "$LOG"
  echo "[smis] apt-get could not install chromium; tests/test_browser.py will skip" >&2
  exit 0
fi
rm -f "$LOG"
"$BROWSER" --version >&2 || true
