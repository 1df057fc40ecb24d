"""Molecule drawings for the ABD atom-and-bond detector, rendered offline with RDKit.

Writes to OUT_DIR (default examples/yolo/artifacts):
  calib/*.png   drawings of the calibration molecules
  eval/*.png    drawings of *other* molecules (no SMILES in both lists)
  calib.npz     {"images": [N, 3, 640, 640]} the calibration drawings letterboxed as
                Ultralytics' predictor does for a fixed 640x640 model
  eval.npz      {"images": [M, 3, 640, 640]} the same for the eval drawings
  unseen/*.png  drawings of a third set of molecules in *another style* (other sizes, bond
                widths and fonts), which the build never sees: what the user's next
                drawings give (examples/check_unseen.py)
  unseen.npz    the same letterboxed
  labels.txt    the checkpoint's 147 class names, one per line, in class order

Calibration and eval drawings vary in size (400..900 px, square and not), bond line width
and font size, so the letterbox scales up and down and pads either axis. The letterbox is Ultralytics' own
`LetterBox` (cv2 BGR read, INTER_LINEAR resize, grey 114 padding, centred; then RGB,
CHW, /255): what `YOLO(ABD.pt).predict(png, rect=False)` feeds the network. There are no
ground-truth boxes: the build and check_detections.py judge each artifact's detections
against PyTorch's.

Needs ultralytics and rdkit (scripts/setup-ultralytics.sh):
  PYTHONPATH=.venv/ultralytics .venv/bin/python examples/yolo/prepare.py [OUT_DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
from rdkit import Chem
from rdkit.Chem import Draw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import IMAGE_SIZE, INPUT_NAME, checkpoint  # noqa: E402

# Common drugs and small compounds: rings, heteroatoms, halogens, charges and stereo
# wedges, so most of the checkpoint's frequent classes appear on both sides.
CALIBRATION_SMILES = (
    "CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "CC(C)Cc1ccc(cc1)C(C)C(=O)O",
    "CC(=O)Nc1ccc(O)cc1", "OC[C@H]1OC(O)[C@H](O)[C@@H](O)[C@@H]1O", "c1ccc2ccccc2c1",
    "CCN(CC)CCNC(=O)c1ccc(N)cc1", "Clc1ccc(cc1)C(c1ccccc1)N1CCN(CC1)CCOCC(=O)O",
    "CN1CCC[C@H]1c1cccnc1", "O=C(O)c1ccccc1O", "CC(C)NCC(O)c1ccc(O)c(O)c1", "NC(=O)c1cccnc1",
    "C1CCCCC1", "OC(=O)CCC(=O)O", "CCOC(=O)c1ccccc1", "Fc1ccc(cc1)C(=O)CCCN1CCC(O)(CC1)c1ccc(Cl)cc1",
    "CS(=O)(=O)c1ccc(cc1)C1=C(C(=O)OC1)c1ccccc1", "COc1ccc2[nH]cc(CCNC(C)=O)c2c1",
    "CC1=C(C(=O)CC1)C", "Brc1ccc(Br)cc1", "O=[N+]([O-])c1ccccc1", "CC(C)(C)c1ccc(O)cc1",
    "N#Cc1ccccc1", "C=CC(=O)OC", "O=C1CCCN1", "CCCCCCCC(=O)O", "c1ccc(cc1)P(c1ccccc1)c1ccccc1",
    "OC(=O)[C@@H](N)Cc1ccccc1", "CC(=O)[C@H]1CC[C@H]2[C@@H]3CCC4=CC(=O)CC[C@]4(C)[C@H]3CC[C@]12C",
    "Cc1ccc(cc1)S(=O)(=O)N", "CN(C)C(=N)N=C(N)N", "C1COCCN1", "FC(F)(F)c1ccccc1", "Ic1ccccc1",
    "CC(C)OP(=O)(C)F", "[Na+].[O-]C(=O)C",
)
EVAL_SMILES = (
    "COc1ccc2nc([nH]c2c1)S(=O)Cc1ncc(C)c(OC)c1C", "CC(=O)OCC[N+](C)(C)C", "Clc1ccc(Cl)c(Cl)c1",
    "OC(=O)c1ccncc1", "CCCCN1CCCC[C@H]1C(=O)Nc1c(C)cccc1C", "O=C(O)C1=CC=CC=C1N",
    "c1ccc2c(c1)[nH]c1ccccc12", "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc12", "NCCc1ccc(O)c(O)c1",
    "OC(=O)C=CC(=O)O", "CC(O)=O", "c1cnc2[nH]ccc2c1", "COC(=O)[C@H]1[C@@H](OC(=O)c2ccccc2)C[C@@H]2CC[C@H]1N2C",
    "FC1=CNC(=O)NC1=O", "OCC(O)CO", "S=C(N)N", "CC1(C)S[C@@H]2[C@H](NC(=O)Cc3ccccc3)C(=O)N2[C@H]1C(=O)O",
    "Oc1ccc(Br)cc1", "CCN(CC)C(=O)[C@H]1CN(C)[C@@H]2Cc3c[nH]c4cccc(C2=C1)c34", "C#CCO",
    "O=S(=O)(O)c1ccccc1", "Nc1nc(N)nc(N)n1", "CC(C)CCCC(C)C", "O=C1c2ccccc2C(=O)c2ccccc12",
    "C[Si](C)(C)Cl", "[K+].[Cl-]",
)
UNSEEN_SMILES = (
    "CC(C)(C)NCC(O)c1ccc(O)c(CO)c1", "Oc1ccccc1", "CCOc1ccc(NC(C)=O)cc1", "OC(=O)CC(O)(CC(=O)O)C(=O)O",
    "Cn1cnc2c1c(=O)[nH]c(=O)n2C", "CC(=O)c1ccccc1", "NC(=O)N", "Clc1ccccc1Cl", "CC#N", "O=Cc1ccccc1",
    "CN(C)c1ccccc1", "c1ccncc1", "CCCCO", "OC(=O)c1ccc(N)cc1", "C1CCNCC1", "CC(=O)OC(C)=O",
    "Fc1ccc(F)cc1", "OCCO", "COc1ccccc1OC", "C=Cc1ccccc1",
)
# (width, height) of each drawing, cycled: scale up and down to 640, pad either axis.
SIZES = ((640, 640), (400, 400), (900, 600), (500, 760), (820, 820), (720, 480), (450, 650), (880, 540))
LINE_WIDTHS = (1, 2, 3, 4)
FONT_SCALES = (0.8, 1.0, 1.3)
# The unseen drawings' other style: sizes, bond widths and fonts the build never saw.
UNSEEN_STYLE = (((560, 560), (1000, 700), (350, 500), (760, 1000)), (5, 6), (0.65, 1.6))


def drawing(smiles: str, index: int, style=(SIZES, LINE_WIDTHS, FONT_SCALES)) -> np.ndarray:
    """One RDKit drawing of `smiles` as an RGB uint8 array, its size, line width and font
    scale picked from `style` by `index` so neighbours differ."""
    sizes, widths, fonts = style
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    options = Draw.MolDrawOptions()
    options.bondLineWidth = widths[index % len(widths)]
    options.baseFontSize = options.baseFontSize * fonts[index % len(fonts)]
    image = Draw.MolToImage(mol, size=sizes[index % len(sizes)], options=options)
    return np.asarray(image.convert("RGB"))


def letterbox(path: Path) -> np.ndarray:
    """The [3, 640, 640] float32 tensor Ultralytics' predictor makes of the image file:
    cv2 reads BGR, LetterBox pads to the fixed size, then RGB, CHW, /255."""
    from ultralytics.data.augment import LetterBox

    bgr = cv2.imread(str(path))
    boxed = LetterBox((IMAGE_SIZE, IMAGE_SIZE), auto=False, stride=32)(image=bgr)
    return np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1)).astype(np.float32) / 255.0


def render(smiles_list, folder: Path, offset: int, style=(SIZES, LINE_WIDTHS, FONT_SCALES)) -> list[Path]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths = []
    for i, smiles in enumerate(smiles_list):
        path = folder / f"{i:03d}.png"
        # BGR for cv2.imwrite; the PNG holds the RGB drawing.
        cv2.imwrite(str(path), drawing(smiles, offset + i, style)[..., ::-1])
        paths.append(path)
    return paths


def prepare(out_dir: Path) -> dict[str, Path]:
    sets = [set(map(Chem.CanonSmiles, s)) for s in (CALIBRATION_SMILES, EVAL_SMILES, UNSEEN_SMILES)]
    overlap = (sets[0] & sets[1]) | (sets[0] & sets[2]) | (sets[1] & sets[2])
    if overlap:
        raise ValueError(f"calibration, eval and unseen share molecules: {sorted(overlap)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"calibration": out_dir / "calib.npz", "eval": out_dir / "eval.npz", "unseen": out_dir / "unseen.npz",
             "labels": out_dir / "labels.txt", "calib_images": out_dir / "calib", "eval_images": out_dir / "eval",
             "unseen_images": out_dir / "unseen"}
    # Offsets so an eval drawing does not repeat the calibration's size/width/font sequence.
    calibration = render(CALIBRATION_SMILES, paths["calib_images"], offset=0)
    evaluation = render(EVAL_SMILES, paths["eval_images"], offset=5)
    unseen = render(UNSEEN_SMILES, paths["unseen_images"], offset=0, style=UNSEEN_STYLE)
    for role, files in (("calibration", calibration), ("eval", evaluation), ("unseen", unseen)):
        np.savez(paths[role], **{INPUT_NAME: np.stack([letterbox(p) for p in files])})
    paths["labels"].write_text("\n".join(checkpoint().names) + "\n", encoding="utf-8")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", type=Path, default=HERE / "artifacts")
    paths = prepare(parser.parse_args().out_dir)
    for role, path in paths.items():
        print(f"{role:12s} {path}")


if __name__ == "__main__":
    main()
