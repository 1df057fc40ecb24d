"""Variable-length check: each eval sentence at its own token length (no padding to 32),
and pairs of sentences run together (longer inputs), through every artifact of a bundle
built with `--input input_ids:1xseq=1..128:int64`, against PyTorch on the same tokens.

The tokens come from Hugging Face's own tokenizer (transformers' AutoTokenizer on the
model folder). A bundle built with `--tokenizer` is also given the texts themselves
(`predict(text)`, tokenized on the device by the bundle's tokenizer.json): its token ids
must be the same and its embeddings as close to PyTorch's.

Usage: python examples/minilm/check_lengths.py BUNDLE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

import edgepack_runtime

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import create  # noqa: E402
from prepare import EVAL_SENTENCES  # noqa: E402


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1), b.reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    bundle = parser.parse_args().bundle
    tokenizer = AutoTokenizer.from_pretrained(HERE / "artifacts" / "model")
    module = create()
    module.load_state_dict(load_file(HERE / "artifacts" / "model" / "model.safetensors"))
    texts = list(EVAL_SENTENCES) + [a + " " + b
                                    for a, b in zip(EVAL_SENTENCES[::2], EVAL_SENTENCES[1::2], strict=False)]
    feeds = [{k: v.numpy() for k, v in tokenizer(text, truncation=True, max_length=128, return_tensors="pt").items()
              if k in ("input_ids", "attention_mask")} for text in texts]
    with torch.no_grad():
        reference = [module(*(torch.from_numpy(f[k]) for k in ("input_ids", "attention_mask"))).numpy()
                     for f in feeds]
    lengths = [f["input_ids"].shape[1] for f in feeds]
    print(f"{len(feeds)} texts, {min(lengths)}..{max(lengths)} tokens each")
    manifest = edgepack_runtime.open_bundle(bundle).manifest
    takes_text = manifest.preprocessing is not None and manifest.preprocessing.text is not None
    for art in manifest.artifacts:
        if art.status != "ok":
            continue
        with edgepack_runtime.load(bundle, artifact=art.name) as model:
            tensors = [cosine(model.run(f)["output"], r) for f, r in zip(feeds, reference, strict=False)]
            line = f"{art.name:22s} tokens in: cosine vs PyTorch mean {np.mean(tensors):.4f} min {np.min(tensors):.4f}"
            if takes_text:
                same = sum(np.array_equal(model.preprocess(t)["input_ids"], f["input_ids"])
                           for t, f in zip(texts, feeds, strict=False))
                text = [cosine(model.predict(t).embedding, r) for t, r in zip(texts, reference, strict=False)]
                line += (f" | text in: same token ids {same}/{len(texts)}, cosine mean {np.mean(text):.4f} "
                         f"min {np.min(text):.4f}")
        print(line)


if __name__ == "__main__":
    main()
