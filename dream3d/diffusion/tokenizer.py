"""A word-level CLIP tokenizer that needs no download.

Real Stable Diffusion models ship CLIP's 49k-token BPE vocabulary. The bundled prior and the tiny
test models instead use a small vocabulary built here, deterministically: every ASCII character
(alone and word-final), plus, for each listed word, the chain of BPE merges that joins it from
the right (``e + d</w> -> ed</w>``, ``r + ed</w> -> red</w>``). Every merge's right-hand token is
word-final, so no merge of one word can break another's chain: each listed word is always exactly
one token, and any other text still tokenizes (by suffix pieces and characters). The result is a
regular ``transformers.CLIPTokenizer`` saved in the usual files, so diffusers loads it unchanged.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable
from pathlib import Path

from transformers import CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
ALPHABET = string.ascii_lowercase + string.digits + string.punctuation


def word_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """The right-to-left merge chains of ``words`` (letters only), sorted for a stable order."""
    merges = set()
    for word in words:
        for k in range(len(word) - 2, -1, -1):
            merges.add((word[k], word[k + 1 :] + "</w>"))
    return sorted(merges, key=lambda m: (len(m[0]) + len(m[1]), m))


def build_word_tokenizer(words: Iterable[str], max_length: int = 16):
    """A ``CLIPTokenizer`` in which each of ``words`` (letters only) is one token."""
    words = sorted({w.lower() for w in words if re.fullmatch(r"[A-Za-z]+", w)})
    vocab: dict[str, int] = {BOS: 0, EOS: 1}
    for c in ALPHABET:
        for token in (c, c + "</w>"):
            vocab.setdefault(token, len(vocab))
    merges = word_merges(words)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def save_tokenizer(tokenizer, folder: str | Path) -> None:
    """``save_pretrained`` plus ``vocab.json``/``merges.txt`` for transformers releases that read those."""
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    merges = [" ".join(m) if not isinstance(m, str) else m for m in data["model"]["merges"]]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
