"""A batch's items: prompts read from a file, seeds, one run folder per (prompt, seed), shards.

A run folder's name comes from its prompt and seed only (``a-red-cube-3f2a1c-s0``: the prompt's
first words, a hash of the whole prompt, the seed), so reordering or extending the prompts file
keeps every finished run where it is, and shard ``K/N`` (a hash of the name, as
:func:`stereo.seeds.shard_of`) picks the same items on every machine.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from stereo.seeds import shard_of

from ..errors import UserError


@dataclass(frozen=True)
class BatchItem:
    """One run of a batch: a prompt, a seed, and the name of its folder in the batch's output."""

    prompt: str
    seed: int

    @property
    def name(self) -> str:
        slug = "-".join(re.findall(r"[a-z0-9]+", self.prompt.lower()))[:40].strip("-") or "prompt"
        digest = hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()[:6]
        return f"{slug}-{digest}-s{self.seed}"


def read_prompts(path: str | Path) -> list[str]:
    """The prompts of a text file: one a line; blank lines and ``#`` comments skipped, repeats dropped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompts file '{path}' does not exist; pass a text file with one prompt a line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read prompts file '{path}' ({e}); pass a UTF-8 text file, one prompt a line") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UserError(f"prompts file '{path}' holds no prompt; write one prompt a line (# starts a comment)")
    unique = list(dict.fromkeys(prompts))
    if len(unique) < len(prompts):
        warnings.warn(f"{len(prompts) - len(unique)} repeated prompt(s) in '{path}' run once", stacklevel=2)
    return unique


def parse_seeds(text: str) -> list[int]:
    """``"0,1,5"`` or ``"0-3"`` (inclusive) or both (``"0-2,7"``) -> the seeds, in order, without repeats."""
    seeds: list[int] = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise UserError(
                f"--seeds takes whole numbers >= 0 separated by commas, or ranges A-B (e.g. 0,1 or 0-3), got '{text}'"
            )
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        seeds += range(first, last + 1)
    return list(dict.fromkeys(seeds))


def make_items(prompts: list[str], seeds: list[int]) -> list[BatchItem]:
    """Every prompt with every seed, prompt-major (the file's order)."""
    return [BatchItem(p, s) for p in prompts for s in seeds]


def shard_items(items: list[BatchItem], shard: tuple[int, int]) -> list[BatchItem]:
    """The items of shard ``(K, N)``: the N shards are disjoint and together hold every item."""
    k, n = shard
    return items if n == 1 else [item for item in items if shard_of(item.name, n) == k]
