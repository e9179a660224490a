"""Text descriptions of crystal structures and MatSciBERT-style text normalisation (SPEC D5).

Three public pieces:

* ``describe_structure(structure)`` -> ``(text, source)``: a robocrystallographer description
  (``source == "robocrys"``) or, when robocrys cannot describe the structure (partial occupancy,
  symmetry or Voronoi errors, a timeout, robocrys not installed), a deterministic template built
  from pymatgen/spglib facts (``source == "template"``).
* ``describe_structures(structures, ids, num_workers=..., cache_path=...)``
  (`mmjax.data.features.text_cache`): the same over many structures, in worker processes, with a
  JSON cache keyed by id + structure hash so every text is generated once.
* ``normalize_text(text)``: the input normalisation MatSciBERT was pretrained with.

robocrys is imported lazily (``import robocrys`` costs about 7 s) and only when a description is
asked for. It is run with ``np.set_printoptions(legacy="1.25")`` (otherwise numpy-2 scalar reprs
such as ``np.int64(0)`` leak into the text) and the default ``use_conventional_cell=True`` (the
other setting fails with pymatgen 2026).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import warnings
from typing import Any

import numpy as np
from pymatgen.core import Structure
from tokenizers.normalizers import BertNormalizer

from mmjax.data.material import RecordError

logger = logging.getLogger(__name__)

TEXT_SOURCES = ("robocrys", "template")

# ---------------------------------------------------------------------------------------------
# MatSciBERT normalisation
# ---------------------------------------------------------------------------------------------
# Source: M3RG-IITD/MatSciBERT, ``normalize_text.py`` (and ``pretraining/normalize_corpus.py``)
# with its character table ``pretraining/vocab_mappings.txt`` (612 entries, one "<char> <repl>"
# per line; the replacement is everything after the first two characters, so it may be empty
# of letters, e.g. a single space, or longer than one character, e.g. "1/2"). Reproduced below
# verbatim as \u-escapes (sha256 of the file text: f1adf8a0a714b17b8f911b34cbfe92d599ed6ed146c39463a40cec66835a400c).
_MATSCIBERT_VOCAB_MAPPINGS = (
    '\u025b \u2208\n\u2208 \u2208\n\u0190 \u2208\n\u2147 e\n\u0192 f\n\u21cc \u21cb\n'
    '\u2170 i\n\u3002 .\nk k\n\u03be \u03be\n\u039e \u03be\n\u2212 -\n'
    'p p\n\u2012 -\n> >\n\uff5e ~\n? ?\n\u0432 \u0432\n'
    '\u2283 \u2283\n[ [\n6 6\n\u210b H\n\u2010 -\n\u0438 \u0438\n'
    '\u2112 L\n\u0111 d\n\u27e8 <\no o\n\u2146 d\n\u25cb *\n'
    '\u1d3c \xb0\n\u2218 \xb0\n4 4\n\u2027 .\n\u01c0 |\n\u02c4 ^\n'
    '\u0278 \u03c6\n\u02c3 >\n\u2070 \xb0\n\u21c4 \u21cb\n\u2022 \u2022\n\\ \\\n'
    '\u2133 M\n\u0440 p\n\u2465 6\n\u02da \xb0\n\u2053 ~\nd d\n'
    '\u2461 2\n\u0288 t\nv v\n\u21a6 \u2192\ns s\n\xa8 "\n'
    '\u02c6 ^\n\u21d4 \u21d4\n\ufe38 \ufe38\n\xaf -\n\u03bf o\n\u201d "\n'
    'x x\n\xb3 3\nn n\n\u02dc ~\n\xb5 \u03bc\n\u2502 |\n'
    '\u01ad t\ng g\nt t\n^ ^\n\u2460 1\n\u2464 5\n'
    '\u21d0 \u21d0\nr r\n\u02db ,\n\xb8 ,\n\u2030 %\n0 0\n'
    '\u2191 \u2191\n\u25bd \u25bd\n\u03b9 \u03b9\n# #\n\uff03 #\n\u0475 v\n'
    "\u2011 -\n\u2039 <\n\u2019 '\n\uff05 %\n\u043e o\n\u2119 P\n"
    '" "\n\u0443 y\n1 1\n\u02d7 -\n\u2215 /\n\xf8 \u2205\n'
    '\xd8 \u2205\n\u25ef O\nj j\n\u06f0 .\n\u207a +\n] ]\n'
    'u u\n\u0444 \u03c6\n\u0424 \u03c6\n\u03c4 \u03c4\n\u2084 4\n\u2467 8\n'
    '7 7\n\u02c2 <\n% %\n\u2088 8\n\u2216 \\\n\u0131 \u0131\n'
    '\u203a >\n$ $\n\u2192 \u2192\n{ {\n\u2044 /\n\u03c1 \u03c1\n'
    '\u03f1 \u03c1\n\u03c5 \u03c5\n\u03b3 \u03b3\n\u0263 \u03b3\n\u0194 \u03b3\n\u03d2 \u03b3\n'
    '\xb2 2\n\xf7 \xf7\n\u211d R\n\xb7 .\n9 9\n\u0434 d\n'
    '\u21a3 \u2192\n\u1d52 \xb0\n\u211b R\n* *\n@ @\nw w\n'
    '\u0441 c\n\u03b5 \u03b5\n. .\n\u2193 \u2193\ni i\nz z\n'
    '/ /\ny y\n\xd7 \xd7\nl l\n\u212c B\n\u019e \u03b7\n'
    '\u0220 \u03b7\n\u201c "\n- -\n\u2190 \u2190\n\uff09 )\n\u05d2 \u03bb\n'
    '\u2463 4\n) )\n\u2194 \u21d4\n\u223c ~\n} }\n\u0456 i\n'
    '\uff1e >\n\u2102 C\n\xa6 |\n\uff1c <\n\u03f0 \u03ba\n\uff0c ,\n'
    '\u019b \u03bb\n\u27e6 [\n\u2013 -\n\u2087 7\n\xac \xac\nq q\n'
    '\u24d2 \xa9\n\u03b6 \u03b6\n\uff0d -\n\ufe65 >\n\u02ed =\ne e\n'
    '& &\n\xa1 !\n\ufe64 <\n\u25e6 \xb0\n\u2551 |\n\u3009 >\n'
    "\u2032 '\n\u2086 6\nh h\n\u05c0 |\n\u02c9 -\n\u27e9 >\n"
    '\u043a \u03ba\n| |\n! !\nf f\n\uff06 &\n\u028c ^\n'
    '\ufe52 .\n_ _\n\u3008 <\n\xb6 \xb6\n\u2130 E\n\u02dd "\n'
    '; ;\n\u204e *\n\u0138 \u03ba\n\u03f2 c\n\u0273 \u03b7\n\u03c9 \u03c9\n'
    '\u2092 0\n\u0435 e\n\u21c6 \u21cb\n\u21cb \u21cb\n\u03d0 \u03b2\n\u2083 3\n'
    ': :\n\u2466 7\n\u266f #\n\u201a ,\n2 2\n\uff1a :\n'
    "\u211c R\n\u0127 h\n3 3\n\u043c \u043c\n\u02bc '\n\u1d13 \u2205\n"
    'c c\n\u2020 +\n\u2e33 .\n\uff1b ;\n\u03bc \u03bc\n\u02ba "\n'
    '( (\n\u2217 \u2217\n\u2018 \u2018\n\uff08 (\n\xf0 \u03b4\n~ ~\n'
    '\u02d9 \xb0\n\xba \xb0\na a\nm m\n\u0431 6\n+ +\n'
    '\u203e -\nb b\n\u02bb `\n\u24e1 r\n\u24c7 r\n\u21d2 \u2192\n'
    '\u2223 |\n5 5\n, ,\n\u03ba \u03ba\n\u2550 =\n\u0297 C\n'
    '8 8\n\u223d ~\n\u03c0 \u03c0\n\u03d6 \u03c0\n\u03a0 \u03c0\n\u03b7 \u03b7\n'
    "\u0442 \u03c4\n\u03b4 \u03b4\n< <\n\u2a0d f\n' '\n\xde p\n"
    '\uff0b +\n\u043f \u043f\n\u03bb \u03bb\n\u039b \u03bb\n\u2462 3\n\u03b2 \u03b2\n'
    '\u03b1 \u03b1\n\u03bd \u03bd\n` `\n\u25cf \u25cf\n\u2713 \u25cf\n\u25aa \u25cf\n'
    '\u27a2 \u25cf\n\u27a3 \u25cf\n\u25a0 \u25cf\n\u2756 \u25cf\n\u2666 \u25cf\n\u0430 a\n'
    "\u0142 l\n\u29f8 /\n\u2500 -\n\u02b9 '\n\u03c3 \u03c3\n\u03c2 \u03c3\n"
    "\xb4 '\n\u2015 \u2015\n\u03c7 \u03c7\n\u2227 \u2227\n\u2014 \u2014\n\u2282 \u2282\n"
    '\xab \xab\n\xbb \xbb\n\u2265 \u2265\n\u2016 \u2016\n\u03c8 \u03c8\n\u2261 \u2261\n'
    '\u22c3 \u22c3\n\xa2 \xa2\n\u221d \u221d\n\xdf \u03b2\n\u2295 \u2295\n\u2228 \u2228\n'
    '\u221e \u221e\n\u2206 \u2206\n\u25b5 \u2206\n\u22bf \u2206\n\u222a \u222a\n\u2286 \u2286\n'
    '\u22a5 \u22a5\n\u2219 \u2219\n\u2211 \u2211\n\u2200 \u2200\n\u2207 \u2207\n\u201e \u201e\n'
    '\xb1 \xb1\n\u2243 \u2243\n\xe6 \xe6\n\u221a \u221a\n\xae \xae\n\u2202 \u2202\n'
    '\xa3 \xa3\n\u2248 \u2248\n\u220f \u220f\n\u2021 \u2021\n\u2205 \u2205\n\u226a \u226a\n'
    '\u22c6 \u22c6\n\u222b \u222b\n\u0283 \u222b\n\u222e \u222e\n\u2297 \u2297\n\u20ac \u20ac\n'
    '\u2208 \u2208\n\u2225 \u2225\n\u03b8 \u03b8\n\u04e8 \u03b8\n\u0275 \u03b8\n\u019f \u03b8\n'
    '\u03f4 \u03b8\n\u0398 \u03b8\n\u03c6 \u03c6\n\u028b \u028b\n\u227a \u227a\n\xb0 \xb0\n'
    '\u2264 \u2264\n\u2aa1 \u2264\n\u2229 \u2229\n\xa9 \xa9\n\xfe \xfe\n\ufb02 fl\n'
    '\xa7 \xa7\n\xa5 \xa5\n\u2203 \u2203\n\u22c5 \u22c5\n\u2300 \u03c6\n\u2254 :=\n'
    "\u22a4 T\n\u2a86 \u2265\n\u2a2f \xd7\n\u224a \u2243\n\u227d \u2265\n\u0384 '\n"
    '\u2715 \xd7\n\u2aaf \u2264\n\u04cf I\n\u2272 \u2264\n\u226b >>\n\u2245 \u2243\n'
    '\u0511 \u2208\n\u2794 \u2192\n\u222d \u222b\u222b\u222b\n\u2606 \u22c6\n\u227b >\n\u27e7 ]]\n'
    '\u22d8 <<<\n\u2a7e \u2265\n\u2a02 \u2297\n\u2b04 \u21d4\n\u27f7 \u21d4\n\u27fa \u21d4\n'
    '\u2375 \u03c9\n\u03a9 \u03a9\n\u2103 \xb0C\n\u2273 \u2265\n\u22d9 >>>\n\u2a7d \u2264\n'
    '\u2296 \u03b8\n\u03d1 \u03b8\n\u2ab0 \u2265\n\u27f6 \u2192\n\u227f \u2265\n\u2a09 \xd7\n'
    '\u27f5 \u2190\n\u03f5 \u2208\n\u224c \u2243\n\u227e \u2264\n\u222c \u222b\u222b\n\u2613 \xd7\n'
    '\u229d \u03b8\n\u2213 \xb1\n\u2605 \u22c6\n\u1e9f \u03b4\n\u25b3 \u0394\n\u0394 \u0394\n'
    '\u220a \u03b5\n\u210f \u045b\n\u045b \u045b\n\u2a95 \u2264\n\u2113 l\n\u2aa2 >\n'
    "\u2237 ::\n\u2a85 \u2264\n\u2082 2\n\u20de ]\n\u05f3 '\n\u237a \u03b1\n"
    "\u0251 \u03b1\n\u22cd \u2243\n\u2a9d \u2264\n\u301e ''\n\u2033 ''\n\u03ed 6\n"
    '\uffe5 \xa5\n\xbd 1/2\n\u2043 --\n\u300b >>\n\u215a 5/6\n\u2173 iv\n'
    '\u0445 x\n\u2172 iii\n\ufb01 fi\n\u2171 ii\n\u2026 ...\n\u014b \u03b7\n'
    '\xbe 3/4\n\u0455 s\n\u03d5 \u2205\n\u03a6 \u03c6\n\u339b \u03bcm\n\u301a [[\n'
    "\u2175 vi\n\u2122 (tm)\n\u01c1 ||\n\u2034 '''\n\u0471 \u03c8\n\u03a8 \u03c8\n"
    "\u301b ]]\n\u2057 ''''\n\u339c mm\n\u339a nm\n\u2154 2/3\n\u2267 \u2265\n"
    '\ufb00 ff\n\u0454 \u2208\n\u0404 \u2208\n\xbc 1/4\n\u2153 1/3\n\u215c  3/8 \n'
    '\u2266 \u2264\n\u2a96 \u2265\n\u0413 \u0413\n\u0393 \u0413\n= =\nA A\n'
    'B B\nC C\nD D\nE E\nF F\nG G\n'
    'H H\n\u043d H\nI I\nJ J\nK K\nL L\n'
    'M M\nN N\nO O\n\u041e O\nP P\nQ Q\n'
    'R R\nS S\nT T\nU U\nV V\n\u0474 V\n'
    'W W\nX X\nY Y\nZ Z\n\u03a3 \u03a3\n\u01a9 \u03a3\n'
    '\u0422 T\n\u03a4 T\n\u0391 A\n\u041c M\n\u039f O\n\u0410 A\n'
    '\u0412 B\n\u2160 I\n\u0415 E\n\u041d H\n\u039d N\n\u03f9 C\n'
    '\u2161 II\n\u2162 III\n\u2163 IV\n\u2165 VI\n\u2166 VII\n\u2167 VIII\n'
    '\u0397 H\n\ufb03 ffi\n\u03a5 Y\n\u039c M\n\u0392 B\n\u04ae Y\n'
    '\u03a7 X\n\u0395 E\n\u0141 L\n\u03a1 P\n\u039a K\n\u041a K\n'
    '\u04c0 I\n\u0421 C\n\u0396 Z\n\u0420 \u0420\n\u0425 X\n\u0399 I\n'
    '\u0406 I\n\u0405 S\n\u0411 6\n\u2fff -\n\u2b1c -\n\u22ef --\n'
    '\u2220 \u2220\n\u25a1 \u25a1\n\u33d1 ln\n\u21c0 \u21c0\n\u22ee  \n\u2423  \n'
    '\u2322  \n\u2135 N\n\u3001 ,\n\u02c7 \u02c7\n\u043b \u03c0\n\u230a [\n'
    '\u230b ]\n\u2534 \u22a5\n\u2299 \u2299\n\u041f II\n\u2252 ~\n\u29f9 /\n'
    "\u2116 N\n\u22f1  \n\u02ca '\n\u27f9 \u2192\n\u2944  \n\u0245 \u03bb\n"
    '\u2195  \n\u0428 III\n\u25bf \u2207\n\u2118 P\n\u044f  \n\u2592  \n'
    '\u25b4 \u0394\n\u04d9 \u0259\n\u0259 \u0259\n\u0470 \u03c8\n\u23df \ufe38\n\u0433  \n'
    '\u0153  \n\u25b9  \n\u25c4  \n\u207b -\n\u2234 \u2234\n\u22ba  \n'
    '\ufe37 \ufe37\n\u02d8  \n\u0418  \n\u2199 -\n\u225c \u225c\n\u2323  \n'
    '\u044b  \n\u03ff  \n\u2308 [\n\u2309 ]\n\u25ca \u25cf\n\u25be \u25cf\n'
    '\u25c6 \u25cf\n\u220e \u25cf\n\u2236 :\n\u044c  \n\u02d1 .\n\u30fb .\n'
    '\u0277 \u03c9\n\u2179 *\n\u2164 V\n\u01ae \u03c4\n\u2571  \n\u2572  \n'
    '\uff1d =\n'
)


def _parse_mappings(table: str) -> dict[str, str]:
    # MatSciBERT: ``mappings = {m[0]: m[2:] for m in f.read().strip().split('\n')}``.
    # (The table maps U+2208 twice, to the same value; the dict keeps the last.)
    return {line[0]: line[2:] for line in table.strip().split("\n")}


MATSCIBERT_CHAR_MAP: dict[str, str] = _parse_mappings(_MATSCIBERT_VOCAB_MAPPINGS)

# Unicode superscript / subscript digits and signs -> ASCII. Only used with
# ``map_script_digits=True`` (not part of MatSciBERT's rules, see normalize_text).
_SCRIPT_DIGITS = str.maketrans(
    "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207a\u207b"
    "\u2080\u2081\u2082\u2083\u2084\u2085\u2086\u2087\u2088\u2089\u208a\u208b",
    "0123456789+-0123456789+-",
)

_BERT_NORMALIZER = None


def _bert_normalizer():
    global _BERT_NORMALIZER
    if _BERT_NORMALIZER is None:
        _BERT_NORMALIZER = BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=False
        )
    return _BERT_NORMALIZER


def normalize_text(text: str, *, map_script_digits: bool = False) -> str:
    """Normalise ``text`` the way MatSciBERT's inputs were normalised.

    Rules (M3RG-IITD/MatSciBERT ``normalize_text.normalize``), applied line by line:

    1. ``tokenizers.normalizers.BertNormalizer(lowercase=False, strip_accents=True,
       clean_text=True, handle_chinese_chars=True)``: control characters removed, whitespace
       turned into spaces, NFD + combining marks removed (so ``Å`` -> ``A`` and the combining
       overline of ``P̅1`` disappears -> ``P1``), spaces around CJK characters.
    2. Every character is replaced through the 612-entry ``vocab_mappings.txt`` table
       (``MATSCIBERT_CHAR_MAP``; e.g. ``–`` -> ``-``, ``₂`` -> ``2``, ``⁺`` -> ``+``, ``²`` -> ``2``,
       ``½`` -> ``1/2``); a character that is not in the table becomes a space. The table has
       no entry for a few script digits (``¹ ⁴ ⁵ ⁶ ₀ ₁ ₅ ₉``), so MatSciBERT turns ``Na¹⁺`` into
       ``Na +`` and ``PO₄`` into ``PO4``.

    ``map_script_digits=True`` (not MatSciBERT's behaviour, off by default) first maps every
    superscript/subscript digit and sign to ASCII, so ``Na¹⁺`` -> ``Na1+`` and ``₁₀`` -> ``10``.

    Input: any ``str``; output: a ``str`` containing only characters of the table's right-hand
    sides, spaces and newlines. Casing is kept (the uncased tokenizer lowercases).
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects a str, got {type(text).__name__}")
    if map_script_digits:
        text = text.translate(_SCRIPT_DIGITS)
    norm = _bert_normalizer()
    table = MATSCIBERT_CHAR_MAP
    out = []
    for line in text.split("\n"):
        line = norm.normalize_str(line)
        out.append("".join(table.get(c, " ") for c in line))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Structure descriptions
# ---------------------------------------------------------------------------------------------

_BOND_TOLERANCE = 0.1  # a neighbour is bonded when within (1 + tol) x the site's nearest distance
_ROBOCRYS_CACHE: dict[bool, Any] = {}


class DescriptionTimeout(Exception):
    """robocrys took longer than the allowed number of seconds for one structure."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Raise DescriptionTimeout after ``seconds`` (POSIX main thread only; else no limit)."""
    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise DescriptionTimeout(f"robocrys took more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _robocrys_objects(mineral_matcher: bool):
    """(StructureCondenser, StructureDescriber), built once per process and setting."""
    if mineral_matcher not in _ROBOCRYS_CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from robocrys import StructureCondenser, StructureDescriber

            # robocrys: mineral_matcher=None builds its default MineralMatcher, False disables it.
            condenser = StructureCondenser(
                use_conventional_cell=True, mineral_matcher=None if mineral_matcher else False
            )
            # Default describer: its mineral sentence also carries "X crystallizes in the <system>
            # <space group> space group" (without a matched mineral only that part remains).
            describer = StructureDescriber()
        _ROBOCRYS_CACHE[mineral_matcher] = (condenser, describer)
    return _ROBOCRYS_CACHE[mineral_matcher]


def robocrys_description(structure, mineral_matcher: bool = False, timeout: float | None = 60.0) -> str:
    """robocrystallographer text of an ordered ``structure``; raises on any robocrys failure.

    ``mineral_matcher=False`` skips AFLOW prototype matching (about 3x faster; the text then has
    no "is X structured" phrase). ``timeout`` in seconds (None: no limit).
    """
    if not structure.is_ordered:
        raise ValueError("structure has partial occupancies (robocrys needs an ordered structure)")
    condenser, describer = _robocrys_objects(bool(mineral_matcher))
    with warnings.catch_warnings(), np.printoptions(legacy="1.25"), _time_limit(timeout):
        warnings.simplefilter("ignore")
        condensed = condenser.condense_structure(structure)
        text = describer.describe(condensed)
    text = " ".join(str(text).split())
    if not text:
        raise ValueError("robocrys returned an empty description")
    return text


def _site_elements(site) -> list[str]:
    return sorted({el.symbol for el in site.species.elements})


def _element_order(structure) -> dict[str, int]:
    # Formula order (pymatgen sorts elements by electronegativity, then symbol).
    return {el.symbol: i for i, el in enumerate(sorted(structure.composition.elements))}


def nearest_neighbor_bonds(structure, tol: float = _BOND_TOLERANCE, max_radius: float = 12.0):
    """Bond-length range per element pair.

    A neighbour j of site i (any periodic image) is bonded to i when
    ``d_ij <= (1 + tol) * min_j d_ij``. For a disordered site every element on it counts.

    Returns ``{(A, B): (shortest, longest)}`` in Å with A before B in formula order.
    Sites with no neighbour within ``max_radius`` Å contribute nothing.
    """
    order = _element_order(structure)
    bonds: dict[tuple[str, str], list[float]] = {}
    radius = 4.0
    neighbors = structure.get_all_neighbors(radius)
    while any(len(n) == 0 for n in neighbors) and radius < max_radius:
        radius = min(2.0 * radius, max_radius)
        neighbors = structure.get_all_neighbors(radius)
    for i, site_neighbors in enumerate(neighbors):
        distances = [n.nn_distance for n in site_neighbors if n.nn_distance > 1e-8]
        if not distances:
            continue
        cut = (1.0 + tol) * min(distances)
        elements_i = _site_elements(structure[i])
        for n in site_neighbors:
            d = float(n.nn_distance)
            if d <= 1e-8 or d > cut:
                continue
            for a in elements_i:
                for b in _site_elements(n):
                    key = tuple(sorted((a, b), key=lambda e: (order.get(e, 10**6), e)))
                    lo_hi = bonds.setdefault(key, [d, d])
                    lo_hi[0] = min(lo_hi[0], d)
                    lo_hi[1] = max(lo_hi[1], d)
    def pair_rank(pair):
        return (order.get(pair[0], 10**6), order.get(pair[1], 10**6), pair)

    return {pair: (lo_hi[0], lo_hi[1]) for pair, lo_hi in sorted(bonds.items(), key=lambda kv: pair_rank(kv[0]))}


def template_description(structure, symprec: float = 0.1) -> str:
    """Deterministic description from pymatgen/spglib facts (the fallback when robocrys fails).

    States the reduced formula, crystal system, space group symbol and number (spglib,
    ``symprec`` in Å), lattice parameters a, b, c (Å) and α, β, γ (degrees), the number of
    sites, the density (g/cm^3), disorder when present, and nearest-neighbour bond lengths
    per element pair (Å, see ``nearest_neighbor_bonds``). Lengths with 2 decimals, angles with 2.
    """
    formula = structure.composition.reduced_formula
    parts = []
    try:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sga = SpacegroupAnalyzer(structure, symprec=symprec)
            symbol, number, system = (
                sga.get_space_group_symbol(),
                int(sga.get_space_group_number()),
                sga.get_crystal_system(),
            )
        parts.append(f"{formula} crystallizes in the {system} {symbol} space group (number {number}).")
    except Exception as err:  # spglib can fail on odd cells; the rest of the facts still hold
        logger.debug("symmetry analysis failed for %s: %s", formula, err)
        parts.append(f"{formula} is a crystal whose space group could not be determined.")
    a, b, c = structure.lattice.abc
    alpha, beta, gamma = structure.lattice.angles
    parts.append(
        f"The unit cell has lattice parameters a = {a:.2f} Å, b = {b:.2f} Å, c = {c:.2f} Å, "
        f"α = {alpha:.2f}°, β = {beta:.2f}°, γ = {gamma:.2f}°, "
        f"contains {len(structure)} sites and has a density of {float(structure.density):.2f} g/cm^3."
    )
    if not structure.is_ordered:
        parts.append("The structure is disordered: some sites have partial or mixed occupancy.")
    try:
        bonds = nearest_neighbor_bonds(structure)
    except Exception as err:
        logger.debug("neighbour search failed for %s: %s", formula, err)
        bonds = {}
    for (el_a, el_b), (lo, hi) in bonds.items():
        if f"{lo:.2f}" == f"{hi:.2f}":
            parts.append(f"{el_a}-{el_b} bond lengths are {lo:.2f} Å.")
        else:
            parts.append(f"{el_a}-{el_b} bond lengths range from {lo:.2f} to {hi:.2f} Å.")
    return " ".join(parts)


def describe_with_reason(structure, use_robocrys: bool, mineral_matcher: bool, timeout, symprec) -> tuple[str, str, str]:
    """(text, source, reason); reason is "" for robocrys, else why the template was used."""
    if use_robocrys:
        if not structure.is_ordered:
            reason = "partial occupancies (disordered structure)"
        else:
            try:
                return robocrys_description(structure, mineral_matcher, timeout), "robocrys", ""
            except Exception as err:  # robocrys raises many kinds (ValueError, IndexError, Qhull ...)
                reason = f"robocrys failed: {type(err).__name__}: {err}"
    else:
        reason = "robocrys disabled"
    return template_description(structure, symprec=symprec), "template", reason


def check_structure(structure, record_id) -> None:
    if not isinstance(structure, Structure):
        raise RecordError(
            str(record_id), f"needs a pymatgen Structure to describe, got {type(structure).__name__}"
        )
    if len(structure) == 0:
        raise RecordError(str(record_id), "structure has no sites")


def describe_structure(
    structure,
    use_robocrys: bool = True,
    mineral_matcher: bool = False,
    *,
    timeout: float | None = 60.0,
    symprec: float = 0.1,
    record_id: str | None = None,
) -> tuple[str, str]:
    """Text description of one structure: ``(text, source)``, source "robocrys" or "template".

    robocrys is tried first (when ``use_robocrys``); any failure, a disordered structure, or
    more than ``timeout`` seconds (POSIX main thread) falls back to ``template_description``.
    The fallback reason is logged (INFO) with ``record_id``. Raises ``RecordError`` naming
    ``record_id`` when ``structure`` is not a pymatgen ``Structure``.
    """
    check_structure(structure, record_id)
    text, source, reason = describe_with_reason(structure, use_robocrys, mineral_matcher, timeout, symprec)
    if reason and use_robocrys:
        logger.info("record %r: template description used (%s)", record_id, reason)
    return text, source
