#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: .venv with the cosmos package (editable) and its dev dependencies.
# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml; on the reference machines pip takes them
# from local disk. Re-running is a no-op unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
  done
fi
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"cosmos needs Python 3.11, found {sys.version}"'

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.cosmos-install-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing cosmos and its dependencies into .venv (first run: a few minutes)"
  # pip warns once per package about absent local index folders on some machines; that noise is dropped.
  { .venv/bin/pip install --disable-pip-version-check -q -e '.[dev]'; } 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  echo "$want" > "$stamp"
fi
# img2dataset (the `download` stage of the real data sets, and its tests) pins webdataset<0.3 and pandas<3,
# which conflict with the project's, so it gets its own environment; cosmos.data.download runs it there.
I2D_SPEC="img2dataset==1.47.0"
i2d_stamp=.venv/img2dataset/.cosmos-install-stamp
if [ ! -f "$i2d_stamp" ] || [ "$(cat "$i2d_stamp")" != "$I2D_SPEC" ]; then
  echo "bootstrap: installing $I2D_SPEC into .venv/img2dataset"
  [ -x .venv/img2dataset/bin/python ] || "$PY" -m venv .venv/img2dataset
  { .venv/img2dataset/bin/pip install --disable-pip-version-check -q "$I2D_SPEC"; } 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  NO_ALBUMENTATIONS_UPDATE=1 .venv/img2dataset/bin/python -c 'import img2dataset' && echo "$I2D_SPEC" > "$i2d_stamp"
fi
.venv/bin/python -c 'import cosmos, torch, open_clip, webdataset, dvc; print(f"bootstrap: ok (torch {torch.__version__})")'
