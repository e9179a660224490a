"""Frozen BERT text embeddings: tokenizer vs vocabulary file, bucketed jit forward vs a plain
per-text forward, checkpoint round trips, the offline hub error, and the dataset column."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import scipy.special

from bert_fixture import VOCAB_RELPATH, make_tiny_bert
from mmjax.data.features.text import normalize_text
from mmjax.data.text_embed import (
    TextEmbedder,
    TextEncoderNotAvailable,
    embed_dataset,
    embed_texts,
    load_text_encoder,
)

MAX_LEN = 32
BUCKETS = (16,)  # + MAX_LEN -> buckets 16 and 32: two compiles per embedder
BATCH = 4

TEXTS = [
    "NaCl crystallizes in the cubic Fm-3m space group.",  # bucket 16
    "Na(1) is bonded to six equivalent Cl(1) atoms to form edge-sharing NaCl6 octahedra.",  # bucket 32
    " ".join(["All Na(1)-Cl(1) bond lengths are 2.85 A and the octahedra are not tilted."] * 3),  # truncated
    "Graphite.",  # bucket 16
]


@pytest.fixture(scope="session")
def vocab_file(shared_data):
    return shared_data / VOCAB_RELPATH


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, vocab_file):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), vocab_file=vocab_file)


@pytest.fixture(scope="session")
def tiny_bert(tiny_bert_dir):
    return load_text_encoder(tiny_bert_dir)


@pytest.fixture(scope="session")
def embedders(tiny_bert):
    model, tok = tiny_bert
    return {p: TextEmbedder(model, tok, p, BATCH, MAX_LEN, BUCKETS) for p in ("cls", "mean")}


def _layer_norm(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _dense(x, p):
    return x @ p["kernel"] + p["bias"]


def numpy_bert(params, config, ids):
    """Plain float64 NumPy BERT encoder for ONE unpadded sequence: ids int [L] -> [L, H].

    Post-LN BERT: embeddings (word + position + token type 0) -> LayerNorm, then per layer
    multi-head self-attention (softmax(q k^T / sqrt(d))) + residual + LayerNorm and an erf-GELU
    feed-forward + residual + LayerNorm (config.layer_norm_eps).
    """
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    eps, heads = config.layer_norm_eps, config.num_attention_heads
    emb = p["embeddings"]
    n = len(ids)
    x = (emb["word_embeddings"]["embedding"][ids] + emb["position_embeddings"]["embedding"][:n]
         + emb["token_type_embeddings"]["embedding"][0])
    x = _layer_norm(x, emb["LayerNorm"], eps)
    d = x.shape[-1] // heads
    for i in range(config.num_hidden_layers):
        lp = p["encoder"]["layer"][str(i)]
        att = lp["attention"]
        q, k, v = (_dense(x, att["self"][name]).reshape(n, heads, d) for name in ("query", "key", "value"))
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        ctx = np.einsum("hqk,khd->qhd", w, v).reshape(n, heads * d)
        x = _layer_norm(_dense(ctx, att["output"]["dense"]) + x, att["output"]["LayerNorm"], eps)
        hidden = _dense(x, lp["intermediate"]["dense"])
        hidden = 0.5 * hidden * (1.0 + scipy.special.erf(hidden / np.sqrt(2.0)))
        x = _layer_norm(_dense(hidden, lp["output"]["dense"]) + x, lp["output"]["LayerNorm"], eps)
    return x


@pytest.fixture(scope="session")
def plain_forward(tiny_bert):
    """Un-jitted, unbucketed, one-text-at-a-time reference: [(last_hidden_state [L, H], mask [L])]."""
    model, tok = tiny_bert
    assert model.config.hidden_act == "gelu"  # exact (erf) GELU, as numpy_bert computes
    out = []
    for text in TEXTS:
        enc = tok(text, truncation=True, max_length=MAX_LEN)
        h = numpy_bert(model.params, model.config, np.asarray(enc["input_ids"]))
        out.append((h, np.asarray(enc["attention_mask"], np.float64)))
    return out


def _pool(plain, pooling):
    """CLS row, or Σ_t m_t h_t / Σ_t m_t in plain numpy."""
    rows = [h[0] if pooling == "cls" else (h * m[:, None]).sum(0) / m.sum() for h, m in plain]
    return np.stack(rows)


def test_tokenizer_ids_follow_vocab_file(tiny_bert, vocab_file):
    _, tok = tiny_bert
    vocab = vocab_file.read_text(encoding="utf-8").split("\n")
    line_of = {w: i for i, w in enumerate(vocab)}
    ids = tok("The crystal structure of silicon")["input_ids"]
    assert ids[0] == line_of["[CLS]"] == 102
    assert ids[-1] == line_of["[SEP]"] == 103
    assert tok.pad_token_id == line_of["[PAD]"] == 0
    words = ["the", "crystal", "structure", "of", "silicon"]  # uncased: "The" -> "the"
    assert ids[1:-1] == [line_of[w] for w in words]
    # A word that is not in the vocabulary is split into "##" pieces that are.
    pieces = tok.tokenize("perovskites")
    assert len(pieces) > 1 and all(p.startswith("##") for p in pieces[1:])
    assert tok.convert_tokens_to_ids(pieces) == [line_of[p] for p in pieces]


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_bucketed_jit_matches_plain_forward(tiny_bert, embedders, plain_forward, pooling):
    model, _ = tiny_bert
    embedder = embedders[pooling]
    lengths = [len(x) for x in embedder.tokenize(TEXTS)]
    assert [embedder.bucket_of(n) for n in lengths] == [16, 32, 32, 16]  # mixed lengths, interleaved
    assert max(lengths) == MAX_LEN  # one text is truncated
    got = embedder(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), model.config.hidden_size)
    np.testing.assert_allclose(got, _pool(plain_forward, pooling), atol=1e-5, rtol=1e-5)
    assert embedder.num_traces == 2  # one compile per bucket length
    embedder(TEXTS[::-1])
    assert embedder.num_traces == 2  # no recompiles


def test_pooling_differs_and_order_preserved(embedders):
    embedder = embedders["mean"]
    base = embedder(TEXTS)
    assert not np.allclose(base, embedders["cls"](TEXTS), atol=1e-3)
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(embedder([TEXTS[i] for i in perm]), base[perm], atol=1e-6)
    # More texts than one batch per bucket: still one row per text, in order.
    many = [TEXTS[i % len(TEXTS)] for i in range(11)]
    np.testing.assert_allclose(embedder(many), base[np.arange(11) % len(TEXTS)], atol=1e-6)
    assert embedder([]).shape == (0, base.shape[1])
    assert embedder.num_traces == 2


def test_embed_texts_function_and_bad_arguments(tiny_bert, embedders):
    model, tok = tiny_bert
    short = [TEXTS[3], TEXTS[0], TEXTS[3]]
    got = embed_texts(short, model, tok, pooling="cls", batch_size=BATCH, max_length=MAX_LEN, bucket_sizes=BUCKETS)
    np.testing.assert_allclose(got, embedders["cls"](short), atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        embed_texts(TEXTS, model, tok, pooling="max")
    with pytest.raises(ValueError, match="max_position_embeddings"):
        embed_texts(TEXTS, model, tok, max_length=1024)
    with pytest.raises(TypeError, match="text 1"):
        embed_texts(["ok", None], model, tok)


def _flax_to_pt_state_dict(params) -> dict:
    """Flax BERT params -> PyTorch BertModel names/layouts (what model.safetensors holds)."""
    out = {}
    for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [p.key for p in path]
        value = np.asarray(value)
        leaf = keys[-1]
        if leaf == "kernel":
            value = value.T
        name = ".".join(keys[:-1]) + (".bias" if leaf == "bias" else ".weight")
        out[name] = np.ascontiguousarray(value)
    return out


def test_checkpoint_round_trips_give_identical_embeddings(tmp_path, tiny_bert, embedders, tiny_bert_dir):
    from safetensors.numpy import save_file

    model, tok = tiny_bert
    embedder = embedders["cls"]
    expected = embedder(TEXTS)
    # Flax checkpoint (config.json + flax_model.msgpack + tokenizer) written again and re-read.
    flax_dir = tmp_path / "flax"
    model.save_pretrained(flax_dir)
    tok.save_pretrained(flax_dir)
    model2, tok2 = load_text_encoder(flax_dir)
    assert model2.config.to_dict() == model.config.to_dict()
    assert tok2("Graphite.")["input_ids"] == tok("Graphite.")["input_ids"]
    # Same architecture, so the compiled forwards are reused with the loaded weights.
    np.testing.assert_array_equal(embedder(TEXTS, params=model2.params), expected)
    # PyTorch-format model.safetensors (as published on the hub), converted on load without torch.
    pt_dir = tmp_path / "pt"
    pt_dir.mkdir()
    save_file(_flax_to_pt_state_dict(model.params), str(pt_dir / "model.safetensors"), metadata={"format": "pt"})
    (pt_dir / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    model3, tok3 = load_text_encoder(pt_dir, vocab_file=tiny_bert_dir / "vocab.txt")
    assert tok3("Graphite.")["input_ids"] == tok("Graphite.")["input_ids"]
    np.testing.assert_allclose(embedder(TEXTS, params=model3.params), expected, atol=1e-6)
    assert embedder.num_traces == 2


def test_unavailable_encoders_give_clear_errors(tmp_path):
    with pytest.raises(TextEncoderNotAvailable, match=r"not cached locally.*folder path") as info:
        load_text_encoder("m3rg-iitd/matscibert")
    assert "m3rg-iitd/matscibert" in str(info.value)
    with pytest.raises(TextEncoderNotAvailable, match="does not exist"):
        load_text_encoder(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(TextEncoderNotAvailable, match="no weights"):
        load_text_encoder(tmp_path)


def test_embed_dataset_adds_column(tmp_path, tiny_bert, embedders):
    from mmjax.data.store import Dataset
    from mmjax.data.store_writer import StoreWriter, finish_manifest

    model, tok = tiny_bert
    texts = ["Na₃Bi(P₂O₇)₂ crystallizes in the triclinic P̅1 space group.", None, TEXTS[1]]
    writer = StoreWriter(tmp_path)
    for i, text in enumerate(texts):
        record = {"xrd": np.full(4, i, np.float32)}
        if text is not None:
            record["text/raw"] = text
        writer.add(f"m-{i}", record)
    finish_manifest(tmp_path, writer, skipped=[], num_input=len(texts))

    values, present = embed_dataset(tmp_path, embedders["mean"])
    assert present.tolist() == [True, False, True]
    stored_present, stored = Dataset.open(tmp_path).column("text_embedding")
    assert stored_present.tolist() == [True, False, True]
    expected = embedders["mean"]([normalize_text(texts[0]), normalize_text(texts[2])])
    np.testing.assert_allclose(stored[[0, 2]], expected, atol=1e-6)
    np.testing.assert_array_equal(stored, values)
    with pytest.raises(ValueError, match="overwrite"):
        embed_dataset(tmp_path, model, "mean", tokenizer=tok)
    assert embedders["mean"].num_traces == 2


def test_hashing_embedder_is_deterministic_normalised_and_word_sensitive():
    from mmjax.data.text_embed import HashingTextEmbedder, hashing_embedder_from_name

    emb = hashing_embedder_from_name("hashing:64")
    assert isinstance(emb, HashingTextEmbedder) and emb.hidden_size == 64
    assert hashing_embedder_from_name("m3rg-iitd/matscibert") is None
    texts = ["NaCl crystallizes in the cubic Fm-3m space group.",
             "NaCl crystallizes in the cubic Fm-3m space group.",
             "ZnO crystallizes in the hexagonal P6_3mc space group.",
             ""]
    out = emb(texts)
    assert out.shape == (4, 64) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:3], axis=1), 1.0, rtol=1e-6)
    assert np.array_equal(out[0], out[1])
    assert not out[3].any()  # no tokens -> zero vector, not NaN
    # Texts sharing most words are closer than a text compared with its own negation of content.
    assert out[0] @ out[2] < 0.999
    # Independent recomputation of one bucket: a single-word text has exactly one non-zero entry.
    single = emb(["perovskite"])[0]
    assert np.count_nonzero(single) == 1 and abs(abs(single).max() - 1.0) < 1e-6
