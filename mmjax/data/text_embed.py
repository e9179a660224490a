"""Frozen text embeddings through a Hugging Face ``FlaxBertModel``, computed once (SPEC D6).

User path
---------
Text embeddings are precomputed once per featurised dataset and stored beside it as the
``"text_embedding"`` column; every training run reads that column (the text encoder is frozen
in all four systems). To use the published encoders:

* MatSciBERT (X-MoPA): ``load_text_encoder("m3rg-iitd/matscibert")`` downloads and caches the
  weights from the Hugging Face hub (network needed once; the hub checkpoint is PyTorch-format,
  loaded with ``from_pt=True``, which needs no torch for ``model.safetensors``). Offline, point
  to a local checkpoint folder instead (``huggingface-cli download m3rg-iitd/matscibert
  --local-dir matscibert`` on a machine with network, then copy the folder).
* MatBERT (MultiMat, MatBind) is not on the hub: download it as its authors describe and pass
  the folder path.
* Any BERT checkpoint folder works: ``config.json`` plus ``flax_model.msgpack`` (Flax weights)
  or ``model.safetensors`` (PyTorch weights, converted on load), plus the tokenizer files
  (``vocab.txt`` / ``tokenizer.json``), or give ``vocab_file=``.

Then ``embed_dataset(dataset_dir, "path/or/hub-id", pooling="cls")`` (X-MoPA: MatSciBERT CLS)
or ``pooling="mean"`` (MatBind: attention-mask mean pooling).

Speed: texts are tokenised once, grouped by length bucket (the smallest of ``bucket_sizes``
that holds the tokenised text), and each bucket runs through ONE jit-compiled forward of shape
``[batch_size, bucket]``; a dataset therefore compiles at most ``len(bucket_sizes)`` programs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.features.text import normalize_text
from mmjax.data.store import Dataset

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "mean")
DEFAULT_BUCKETS = (64, 128, 256, 512)
TEXT_EMBEDDING_COLUMN = "text_embedding"


class TextEncoderNotAvailable(OSError):
    """The requested text-encoder weights are neither a local checkpoint nor downloadable."""


def _is_local_reference(name: str) -> bool:
    return (
        os.path.exists(name)
        or name.startswith(("/", "./", "../", "~"))
        or name.count("/") > 1
        or os.sep != "/" and os.sep in name
    )


def _load_tokenizer(source: str, vocab_file: str | os.PathLike | None, do_lower_case: bool | None):
    from transformers import BertTokenizerFast

    if vocab_file is not None:
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"vocabulary file {vocab_file} does not exist")
        return BertTokenizerFast(
            vocab_file=os.fspath(vocab_file), do_lower_case=True if do_lower_case is None else do_lower_case
        )
    kwargs = {} if do_lower_case is None else {"do_lower_case": do_lower_case}
    return BertTokenizerFast.from_pretrained(source, **kwargs)


def load_text_encoder(
    name_or_path: str | os.PathLike,
    *,
    vocab_file: str | os.PathLike | None = None,
    do_lower_case: bool | None = None,
    dtype: Any = jnp.float32,
):
    """Load a frozen BERT text encoder: ``(FlaxBertModel, BertTokenizerFast)``.

    name_or_path: a local checkpoint folder (``config.json`` + ``flax_model.msgpack``, or
        ``model.safetensors`` / ``pytorch_model.bin`` with PyTorch weights; the latter needs torch)
        or a hub id such as ``"m3rg-iitd/matscibert"`` (downloaded once into the HF cache).
    vocab_file: use this WordPiece vocabulary instead of the checkpoint's tokenizer files.
    do_lower_case: override the tokenizer's casing (default: the checkpoint's setting; True with
        ``vocab_file``; MatSciBERT is uncased, MatBERT cased).
    dtype: computation dtype of the model (parameters stay as stored).

    Raises ``TextEncoderNotAvailable`` (an ``OSError``) with instructions when the weights are
    not available (hub offline and not cached, or a folder without weights).
    """
    from transformers import FlaxBertModel

    source = os.path.expanduser(os.fspath(name_or_path))
    if _is_local_reference(source):
        if not os.path.isdir(source):
            raise TextEncoderNotAvailable(f"text encoder folder {source} does not exist")
        files = set(os.listdir(source))
        if "config.json" not in files:
            raise TextEncoderNotAvailable(f"text encoder folder {source} has no config.json")
        if "flax_model.msgpack" in files:
            model = FlaxBertModel.from_pretrained(source, dtype=dtype)
        elif "model.safetensors" in files:
            model = FlaxBertModel.from_pretrained(source, from_pt=True, dtype=dtype)
        elif "pytorch_model.bin" in files:
            try:
                model = FlaxBertModel.from_pretrained(source, from_pt=True, dtype=dtype)
            except ImportError as err:
                raise TextEncoderNotAvailable(
                    f"{source}/pytorch_model.bin needs torch to convert; install torch, or convert it once "
                    "to model.safetensors (or flax_model.msgpack) elsewhere"
                ) from err
        else:
            raise TextEncoderNotAvailable(
                f"text encoder folder {source} has no weights (flax_model.msgpack, model.safetensors or "
                "pytorch_model.bin)"
            )
        tokenizer_files = {"vocab.txt", "tokenizer.json"}
        if vocab_file is None and not files & tokenizer_files:
            raise TextEncoderNotAvailable(
                f"text encoder folder {source} has no tokenizer files (vocab.txt or tokenizer.json); "
                "pass vocab_file="
            )
        return model, _load_tokenizer(source, vocab_file, do_lower_case)

    # Hub id: Flax weights if published, else the PyTorch weights converted on load.
    errors: list[BaseException] = []
    model = None
    for from_pt in (False, True):
        try:
            model = FlaxBertModel.from_pretrained(source, from_pt=from_pt, dtype=dtype)
            break
        except (OSError, ImportError, ValueError) as err:
            errors.append(err)
    if model is None:
        details = " | ".join(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}" for e in errors)
        if any(isinstance(e, ImportError) for e in errors):
            raise TextEncoderNotAvailable(
                f"{source!r} only has PyTorch weights in pytorch_model.bin, which needs torch to convert; "
                "install torch once, or convert the checkpoint to model.safetensors / flax_model.msgpack and "
                f"pass the folder path. Details: {details}"
            )
        offline = any(
            os.environ.get(var, "0").strip().lower() not in ("", "0", "false", "no")
            for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
        )
        raise TextEncoderNotAvailable(
            f"the weights of text encoder {source!r} are not cached locally"
            + (" and the hub is offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE set)" if offline
               else " and could not be downloaded")
            + f". Either run once with network access (`huggingface-cli download {source}` fills the cache), "
            "or download the checkpoint elsewhere and pass its folder path (config.json + flax_model.msgpack "
            f"or model.safetensors, and vocab.txt) instead of the hub id. Details: {details}"
        )
    try:
        tokenizer = _load_tokenizer(source, vocab_file, do_lower_case)
    except (OSError, TypeError, ValueError) as err:
        raise TextEncoderNotAvailable(
            f"the tokenizer of {source!r} is not available offline; pass vocab_file= ({err})"
        ) from err
    return model, tokenizer


def _check_buckets(bucket_sizes: Sequence[int], max_length: int) -> tuple[int, ...]:
    buckets = sorted({int(b) for b in bucket_sizes if int(b) < max_length} | {int(max_length)})
    if buckets[0] < 2:
        raise ValueError(f"bucket sizes must be >= 2 tokens ([CLS] and [SEP]), got {bucket_sizes}")
    return tuple(buckets)


class TextEmbedder:
    """Length-bucketed, jit-compiled frozen BERT forward with CLS or mean pooling.

    ``embedder(texts) -> float32 [n, hidden]`` in input order. Each text is tokenised
    (``[CLS] ... [SEP]``, truncated to ``max_length`` tokens), padded to the smallest bucket
    length that holds it, and batches are padded to ``batch_size`` rows, so the forward is
    compiled once per bucket length actually used (``num_traces`` counts compilations).

    pooling "cls": the last hidden state of the first token ([CLS]), as X-MoPA/MultiMat use.
    pooling "mean": Σ_t m_t h_t / Σ_t m_t over the attention mask m (MatBind).
    """

    def __init__(
        self,
        model,
        tokenizer,
        pooling: str = "cls",
        batch_size: int = 64,
        max_length: int = 512,
        bucket_sizes: Sequence[int] = DEFAULT_BUCKETS,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        max_positions = int(getattr(model.config, "max_position_embeddings", max_length))
        if max_length > max_positions:
            raise ValueError(
                f"max_length {max_length} exceeds the model's max_position_embeddings {max_positions}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.buckets = _check_buckets(bucket_sizes, self.max_length)
        self.hidden_size = int(model.config.hidden_size)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.num_traces = 0
        self._forward = jax.jit(self._pooled_forward)

    def _pooled_forward(self, params, input_ids, attention_mask):
        """[B, L] int32 ids and mask -> float32 [B, hidden] pooled last hidden states."""
        self.num_traces += 1  # runs only while tracing
        out = self.model(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=jnp.zeros_like(input_ids),
            params=params,
            train=False,
        )
        hidden = out.last_hidden_state.astype(jnp.float32)  # [B, L, H]
        if self.pooling == "cls":
            return hidden[:, 0, :]
        mask = attention_mask.astype(jnp.float32)[..., None]  # [B, L, 1]
        return (hidden * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (with [CLS]/[SEP], truncated to ``max_length``)."""
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=False, add_special_tokens=True
        )
        return enc["input_ids"]

    def bucket_of(self, length: int) -> int:
        """Smallest bucket length >= ``length`` tokens."""
        for b in self.buckets:
            if length <= b:
                return b
        raise ValueError(f"{length} tokens exceed the largest bucket {self.buckets[-1]}")

    def __call__(self, texts: Sequence[str], params=None) -> np.ndarray:
        """float32 [len(texts), hidden] embeddings in input order.

        params: optional weights with the same structure as ``model.params`` (e.g. another
            checkpoint of the same architecture); reuses the compiled forwards.
        """
        texts = list(texts)
        out = np.zeros((len(texts), self.hidden_size), np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        by_bucket: dict[int, list[int]] = {}
        for i, seq in enumerate(ids):
            by_bucket.setdefault(self.bucket_of(len(seq)), []).append(i)
        params = self.model.params if params is None else params
        for bucket in sorted(by_bucket):
            rows = by_bucket[bucket]
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                input_ids = np.full((self.batch_size, bucket), self.pad_id, np.int32)
                mask = np.zeros((self.batch_size, bucket), np.int32)
                for r, i in enumerate(chunk):
                    input_ids[r, : len(ids[i])] = ids[i]
                    mask[r, : len(ids[i])] = 1
                pooled = self._forward(params, jnp.asarray(input_ids), jnp.asarray(mask))
                out[chunk] = np.asarray(pooled)[: len(chunk)]
        return out


class HashingTextEmbedder:
    """A frozen, dependency-free stand-in text encoder: signed feature hashing of words and bigrams.

    For smoke runs and the embedded default data when no BERT checkpoint is available offline
    (``config.data.text_model = "hashing"`` or ``"hashing:<dim>"``). It is NOT a language model:
    texts that share words get similar vectors, nothing more. Each lower-cased word and word
    bigram is hashed (BLAKE2b, stable across processes and platforms) to a bucket in [0, dim) and a
    sign; counts are log1p-damped and the vector is L2-normalised. Output float32 [n, dim].
    """

    pooling = "hashing"
    num_traces = 0

    def __init__(self, dim: int = 768):
        if dim <= 0:
            raise ValueError(f"hashing text embedder: dim must be positive, got {dim}")
        self.hidden_size = int(dim)

    @staticmethod
    def _tokens(text: str) -> list[str]:
        words = re.findall(r"[\w.+-]+", text.lower())
        return words + [f"{a} {b}" for a, b in zip(words, words[1:])]

    def __call__(self, texts: Sequence[str], params=None) -> np.ndarray:
        out = np.zeros((len(texts), self.hidden_size), np.float32)
        for row, text in enumerate(texts):
            counts: dict[int, float] = {}
            for tok in self._tokens(text):
                h = int.from_bytes(hashlib.blake2b(tok.encode("utf-8"), digest_size=8).digest(), "little")
                bucket, sign = h % self.hidden_size, 1.0 if (h >> 63) & 1 else -1.0
                counts[bucket] = counts.get(bucket, 0.0) + sign
            for bucket, value in counts.items():
                out[row, bucket] = np.sign(value) * np.log1p(abs(value))
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return out


def hashing_embedder_from_name(name) -> "HashingTextEmbedder | None":
    """``"hashing"`` / ``"hashing:<dim>"`` -> a HashingTextEmbedder; anything else -> None."""
    if not isinstance(name, str) or not (name == "hashing" or name.startswith("hashing:")):
        return None
    dim = int(name.split(":", 1)[1]) if ":" in name else 768
    return HashingTextEmbedder(dim)


def embed_texts(
    texts: Sequence[str],
    model,
    tokenizer,
    pooling: str = "cls",
    batch_size: int = 64,
    max_length: int = 512,
    bucket_sizes: Sequence[int] = DEFAULT_BUCKETS,
) -> np.ndarray:
    """Frozen BERT embeddings of ``texts``: float32 ``[n, hidden]`` in input order.

    See ``TextEmbedder`` (one jit compile per bucket length; batches padded to ``batch_size``).
    Texts are used as given; apply ``mmjax.data.features.text.normalize_text`` first for
    MatSciBERT (``embed_dataset`` does).
    """
    embedder = TextEmbedder(model, tokenizer, pooling, batch_size, max_length, bucket_sizes)
    return embedder(texts)


def _stored_texts(dataset) -> list:
    """Raw texts of a store ``Dataset`` in dataset order (None where a record has none)."""
    if hasattr(dataset, "texts"):
        return list(dataset.texts)
    if "text/raw" not in dataset.keys:
        raise KeyError(f"dataset {dataset.root} stores no raw texts (column 'text/raw'); featurise with text")
    present, texts = dataset.column("text/raw")
    return [t if p else None for t, p in zip(texts, present)]


def embed_dataset(
    dataset_dir: str | os.PathLike,
    model_or_path,
    pooling: str = "cls",
    *,
    tokenizer=None,
    normalize: bool = True,
    column: str = TEXT_EMBEDDING_COLUMN,
    batch_size: int = 64,
    max_length: int = 512,
    bucket_sizes: Sequence[int] = DEFAULT_BUCKETS,
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed the raw texts stored with a featurised dataset and add them as ``column``, once.

    dataset_dir: a dataset written by ``mmjax.data.store`` (``Dataset.open``); its raw texts are
        the string column ``"text/raw"`` (None for records without text).
    model_or_path: ``"hashing"`` / ``"hashing:<dim>"`` (the offline stand-in
        ``HashingTextEmbedder``), a ``TextEmbedder`` (used as configured; ``pooling`` and the size arguments
        are then ignored), a ``FlaxBertModel`` (then ``tokenizer`` is required), or anything
        ``load_text_encoder`` accepts (checkpoint folder or hub id).
    normalize: apply ``normalize_text`` (MatSciBERT's input normalisation) before tokenising.

    Returns ``(embeddings float32 [n_records, hidden], present bool [n_records])`` as written
    (rows without text are zeros and marked absent). The store raises when ``column`` exists
    and not ``overwrite``.
    """
    dataset = Dataset.open(os.fspath(dataset_dir))
    if column in dataset.keys and not overwrite:
        raise ValueError(f"dataset {dataset_dir} already has column {column!r}; pass overwrite=True")
    if isinstance(model_or_path, (TextEmbedder, HashingTextEmbedder)):
        embedder = model_or_path
    elif hashing_embedder_from_name(model_or_path) is not None:
        embedder = hashing_embedder_from_name(model_or_path)
    else:
        if isinstance(model_or_path, (str, os.PathLike)):
            model, tok = load_text_encoder(model_or_path)
            tokenizer = tokenizer or tok
        else:
            model = model_or_path
            if tokenizer is None:
                raise ValueError("embed_dataset: pass tokenizer= together with a model object")
        embedder = TextEmbedder(model, tokenizer, pooling, batch_size, max_length, bucket_sizes)
    texts = _stored_texts(dataset)
    present = np.array([isinstance(t, str) and bool(t.strip()) for t in texts], bool)
    have = np.flatnonzero(present)
    chosen = [normalize_text(texts[i]) if normalize else texts[i] for i in have]
    values = np.zeros((len(texts), embedder.hidden_size), np.float32)
    if len(have):
        values[have] = embedder(chosen)
    logger.info(
        "embedded %d of %d texts of %s (%s pooling, %d compiles)", len(have), len(texts), dataset_dir, embedder.pooling,
        embedder.num_traces,
    )
    dataset.add_column(column, values, present=present, overwrite=overwrite)
    return values, present
