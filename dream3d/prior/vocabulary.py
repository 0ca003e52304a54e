"""The words the bundled shapes prior knows: those of its training captions.

The prior was trained only on captions "a {colour} {shape}, {view} view" (``docs/shapes-world.md``),
so any other word changes nothing it draws: "a DSLR photo of a hamburger" silently comes out as
some shape. :func:`warn_unknown_words` says so in one line and points to ``--model``.
"""

from __future__ import annotations

import re
import warnings

from ..cameras import VIEW_WORDS
from ..shapes.objects import COLOURS, SHAPES

ARTICLES = ("a", "an", "the")


class UnknownWordsWarning(UserWarning):
    """A prompt has words the bundled prior never saw in training."""


def known_words() -> set[str]:
    return {*SHAPES, *COLOURS, *VIEW_WORDS, "view", *ARTICLES}


def unknown_words(prompt: str) -> list[str]:
    """The words of ``prompt`` (lower case, in order, once each) that the bundled prior does not know."""
    known = known_words()
    return list(dict.fromkeys(w for w in re.findall(r"[a-z0-9]+", prompt.lower()) if w not in known))


def warn_unknown_words(prompt: str) -> list[str]:
    """Warn (one line) about the words of ``prompt`` that the bundled prior does not know; returns them."""
    unknown = unknown_words(prompt)
    if unknown:
        warnings.warn(
            f"the bundled shapes prior does not know {', '.join(map(repr, unknown))}: it knows the shapes "
            f"{', '.join(SHAPES)}, the colours {', '.join(COLOURS)} and the view words {', '.join(VIEW_WORDS)}; "
            f"pass --model with a Stable Diffusion model (a folder or hub id) for other prompts",
            UnknownWordsWarning,
            stacklevel=2,
        )
    return unknown
