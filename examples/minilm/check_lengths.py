"""Variable-length check: each eval sentence at its own token length (no padding to 32),
and pairs of sentences run together (longer inputs), through every artifact of a bundle
built with `--input input_ids:1xseq=1..128:int64`, against PyTorch on the same tokens.

Usage: python examples/minilm/check_lengths.py BUNDLE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

import edgepack_runtime

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import create  # noqa: E402
from prepare import EVAL_SENTENCES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    bundle = parser.parse_args().bundle
    tokenizer = Tokenizer.from_file(str(HERE / "artifacts" / "model" / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128: each text keeps its own length here
    module = create()
    module.load_state_dict(load_file(HERE / "artifacts" / "model" / "model.safetensors"))
    texts = list(EVAL_SENTENCES) + [a + " " + b for a, b in zip(EVAL_SENTENCES[::2], EVAL_SENTENCES[1::2])]
    feeds = []
    for encoding in tokenizer.encode_batch(texts):
        ids = np.array([encoding.ids], np.int64)
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    with torch.no_grad():
        reference = [module(*(torch.from_numpy(f[k]) for k in ("input_ids", "attention_mask"))).numpy()
                     for f in feeds]
    lengths = [f["input_ids"].shape[1] for f in feeds]
    print(f"{len(feeds)} texts, {min(lengths)}..{max(lengths)} tokens each")
    for art in edgepack_runtime.open_bundle(bundle).manifest.artifacts:
        if art.status != "ok":
            continue
        model = edgepack_runtime.load(bundle, artifact=art.name)
        outputs = [model.run(f)["output"] for f in feeds]
        cosines = [float(np.sum(o * r) / (np.linalg.norm(o) * np.linalg.norm(r))) for o, r in zip(outputs, reference)]
        print(f"{art.name:22s} cosine vs PyTorch mean {np.mean(cosines):.4f} min {np.min(cosines):.4f}")


if __name__ == "__main__":
    main()
