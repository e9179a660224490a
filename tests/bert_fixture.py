"""Test helper: a tiny random ``FlaxBertModel`` with the real SciBERT/MatSciBERT vocabulary.

MatSciBERT/MatBERT weights are not available offline; tests use this model (random weights,
real 31,090-token uncased WordPiece vocabulary) saved as a normal Hugging Face checkpoint folder.
"""

from __future__ import annotations

import os
import pathlib

VOCAB_RELPATH = pathlib.Path("vocab") / "scibert_scivocab_uncased.txt"
VOCAB_SIZE = 31090


def make_tiny_bert(tmpdir, hidden: int = 32, layers: int = 2, heads: int = 2, *, vocab_file,
                   max_position_embeddings: int = 512, seed: int = 0) -> pathlib.Path:
    """Write ``config.json``, ``flax_model.msgpack`` and the tokenizer files into ``tmpdir``.

    vocab_file: path of ``shared/data/vocab/scibert_scivocab_uncased.txt`` (callers get it from
        the ``shared_data`` fixture, which skips when the data folder is absent).
    Returns the checkpoint folder (``tmpdir``).
    """
    from transformers import BertConfig, BertTokenizerFast, FlaxBertModel

    out = pathlib.Path(tmpdir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=max_position_embeddings,
    )
    # Same weights as FlaxBertModel(cfg, seed=seed), but one jit-compiled init instead of
    # op-by-op eager init (about 2x faster on a loaded CI machine).
    import jax

    model = FlaxBertModel(cfg, seed=seed, _do_init=False)
    params = jax.jit(model.init_weights, static_argnums=1)(jax.random.PRNGKey(seed), (1, 1))
    model.save_pretrained(out, params=params)
    tokenizer = BertTokenizerFast(vocab_file=os.fspath(vocab_file), do_lower_case=True)
    tokenizer.save_pretrained(out)
    return out
