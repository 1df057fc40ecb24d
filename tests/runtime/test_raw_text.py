"""Texts in (issue #13): the bundle carries a Hugging Face tokenizer.json; predict(text) and
the server's text/plain match PyTorch fed by transformers' own tokenizer on the same file.
The tokenizer is a real BERT-style WordPiece one (the `tokenizers` library), with a small
vocabulary so the model stays tiny."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

import edgepack
import edgepack_runtime
from edgepack_runtime import InputError
from edgepack_runtime.errors import InputTooLarge

from ..packager.test_integer_inputs import TEXT_MODEL
from .test_serve import CLI, Server

WORDS = ("the cat sat on a mat dog ran in park sun is warm cold rain fell all day long we like tea and "
         "cake bread with butter ##s ##ing ##ed").split()
MAX_TOKENS = 16

MODEL = TEXT_MODEL  # a bag of token embeddings, vocabulary 100


def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                             special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=128)  # as many saved files do: the runtime decides
    return tokenizer.to_str()


@pytest.fixture(scope="module")
def text_raw(tmp_path_factory):
    work = tmp_path_factory.mktemp("raw-text")
    (work / "bag.py").write_text(MODEL)
    (work / "tokenizer.json").write_text(_tokenizer_json())
    result = edgepack.build(f"{work / 'bag.py'}:create", work / "bundle", "host", formats=["onnx"], precisions=["fp32"],
                            inputs=[f"input_ids:1xseq=1..{MAX_TOKENS}:int64", "attention_mask:1xseq:int64"],
                            tokenizer=work / "tokenizer.json", postprocess="normalized-embedding")
    return work, result.path


TEXTS = ("The cat sat on a mat.", "Dogs ran in the park all day long", "We like tea and cake with bread and butter",
         "rain", "The sun is warm, the rain is cold, the cat sat on the mat and the dog ran in the park all day.")


def test_predict_text_matches_pytorch_on_the_hugging_face_tokenizer(text_raw):
    from transformers import PreTrainedTokenizerFast

    work, bundle = text_raw
    reference = PreTrainedTokenizerFast(tokenizer_file=str(work / "tokenizer.json"))
    module = edgepack.model_source.load_model(f"{work / 'bag.py'}:create").module
    with edgepack_runtime.load(bundle) as model:
        assert model.raw_input_kind() == "text"
        for text in TEXTS:
            expected = reference(text, truncation=True, max_length=MAX_TOKENS, padding=False, return_tensors="pt")
            feeds = model.preprocess(text)
            assert feeds["input_ids"].tolist() == expected["input_ids"].tolist()  # same tokens, same length
            assert feeds["attention_mask"].tolist() == expected["attention_mask"].tolist()
            with torch.no_grad():
                vector = module(expected["input_ids"], expected["attention_mask"])[0].numpy()
            vector = vector / np.linalg.norm(vector)
            embedding = model.predict(text).embedding
            assert embedding.shape == (4,) and abs(np.linalg.norm(embedding) - 1) < 1e-5
            assert float(embedding @ vector) >= 0.99999
        assert model.preprocess(TEXTS[-1])["input_ids"].shape == (1, MAX_TOKENS)  # truncated, [SEP] kept last
        assert model.preprocess(TEXTS[-1])["input_ids"][0, -1] == 3
        with pytest.raises(InputTooLarge):
            model.predict("cat " * 50_000)
        with pytest.raises(InputError, match="str"):
            model.predict(b"cat")


def test_run_text_and_the_server_take_texts(text_raw, tmp_path):
    _, bundle = text_raw
    shown = subprocess.run([CLI, "run", bundle, "--text", "the cat sat", "--json"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)["embedding"]) == 4
    server = Server(bundle, tmp_path)
    try:
        status, body, _ = server.request("POST", "/v1/predict", "the cat sat".encode(), {"content-type": "text/plain"})
        assert status == 200
        assert json.loads(body)["embedding"] == pytest.approx(json.loads(shown.stdout)["embedding"], abs=1e-6)
        status, _, _ = server.request("POST", "/v1/predict", b"the cat", {"content-type": "text/plain",
                                                                           "origin": "http://evil.example"})
        assert status == 403  # a web page elsewhere may post text/plain without a preflight
        status, _, _ = server.request("POST", "/v1/predict", b"\xff\xfe", {"content-type": "text/plain"})
        assert status == 422
        status, _, _ = server.request("POST", "/v1/predict", b"\x89PNG", {"content-type": "image/png"})
        assert status == 415
    finally:
        server.stop()
