"""core/text: the real MiniLM encoder and the embedding cache."""

import torch

from ganvas.core.text.encoder import EmbeddingCache, get_text_encoder

torch.set_num_threads(1)


def test_real_text_encoder_gives_normalised_sentence_vectors_and_token_states():
    emb = get_text_encoder().encode(
        ["a large red circle in the centre", "a small blue star on the left"], with_tokens=True
    )
    assert emb.sentence.shape == (2, 384)
    assert torch.allclose(emb.sentence.norm(dim=1), torch.ones(2), atol=1e-5)
    assert emb.tokens.shape[0] == 2 and emb.tokens.shape[2] == 384
    assert emb.mask.shape == emb.tokens.shape[:2]
    # Different captions, different vectors; the same caption, the same vector.
    assert (emb.sentence[0] @ emb.sentence[1]) < 0.95
    again = get_text_encoder().encode(["a large red circle in the centre"]).sentence
    assert torch.allclose(again[0], emb.sentence[0], atol=1e-5)


def test_embedding_cache_encodes_each_caption_once_and_survives_a_restart(tmp_path):
    calls = []

    class CountingEncoder:
        def encode(self, texts):
            calls.append(list(texts))
            return get_text_encoder().encode(texts)

    cache = EmbeddingCache(tmp_path, encoder=CountingEncoder())
    first = cache.lookup(["a red circle", "a blue square", "a red circle"])
    assert first.shape == (3, 384) and torch.equal(first[0], first[2])
    assert calls == [["a blue square", "a red circle"]]
    fresh = EmbeddingCache(tmp_path, encoder=CountingEncoder())
    assert torch.equal(fresh.lookup(["a blue square"])[0], first[1])
    assert len(calls) == 1  # read from disk, not re-encoded
