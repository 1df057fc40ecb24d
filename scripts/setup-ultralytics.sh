#!/usr/bin/env bash
# Ultralytics, RDKit and the ABD detector checkpoint in a folder of their own, for the
# YOLO example and `edgepack build best.pt`:
#   PYTHONPATH=.venv/ultralytics .venv/bin/python -c "from ultralytics import YOLO"
#
# Why a --target folder and --no-deps: ultralytics requires torchvision, and PyPI's
# torchvision 0.28 does not import against this machine's torch 2.13.0+cpu (its compiled
# ops are missing: "operator torchvision::nms does not exist"), and in the main venv it
# breaks transformers' model imports. Ultralytics 8.3.236 imports torchvision only
# lazily (classification transforms, SAM, TorchScript, validation) and its NMS uses its
# own TorchNMS (written to match torchvision's) unless torchvision is already imported,
# so loading a detection checkpoint, exporting its head and `YOLO.predict` on images all
# run without it. It does read torchvision's *version* at import (from package metadata,
# for constants only classification transforms use), so the real torchvision wheel's
# .dist-info is kept and its package removed: anything that does import torchvision fails
# with ModuleNotFoundError instead of running a stand-in, and transformers (which looks
# for the package, not the metadata) keeps treating torchvision as absent.
# Everything else it needs at import that the main venv lacks is below; numpy, pillow,
# matplotlib, scipy, pyyaml, requests and psutil come from the main venv.
#
# Idempotent: a stamp file records the pins; change a pin and the folder is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
DEST=$VENV/ultralytics
PY=$VENV/bin/python
# 8.3.236 unpickles 8.3 checkpoints (ABD.pt says 8.3.91); from 8.3.237 on, SAM3 imports
# torchvision at `from ultralytics import YOLO`, which needs the package itself.
PINS=(
  ultralytics==8.3.236
  ultralytics-thop==2.2.3
  opencv-python-headless==4.14.0.94
  rdkit==2026.9.1
  ABD-model==0.3.0
)
# Only its metadata stays (see above); same release as torch 2.13.
TORCHVISION_PIN=torchvision==0.28.0
STAMP=$DEST/.edgepack-ultralytics
want="${PINS[*]} $TORCHVISION_PIN metadata"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
test -x "$PY" || { echo "error: $PY missing: run 'make setup' first" >&2; exit 1; }
rm -rf "$DEST"
# --no-deps: never let pip pull torch (a multi-GB CUDA build) or torchvision in here.
"$PY" -m pip install --quiet --no-deps --target "$DEST" "${PINS[@]}" "$TORCHVISION_PIN"
rm -rf "$DEST/torchvision" "$DEST/torchvision.libs"
PYTHONPATH=$DEST "$PY" -c "
import sys, importlib.util, importlib.resources as r
import ultralytics, rdkit, cv2, ABD_model
assert 'torchvision' not in sys.modules and importlib.util.find_spec('torchvision') is None
assert r.files('ABD_model').joinpath('ABD.pt').is_file()
"
echo "$want" >"$STAMP"
