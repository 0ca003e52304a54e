"""Per-sample random seeds and shard assignment, both derived from a sample's name.

A sample's generator depends only on the run's global seed and the sample's stem, never on the
order samples are processed in, the number of workers, the shard or whether the run was
resumed: the same sample always gets the same scale, background and noise.
"""

from __future__ import annotations

import hashlib


def sample_seed(global_seed: int, name: str) -> int:
    """A 63-bit seed from ``(global_seed, name)``: SHA-256 of ``"<global_seed>/<name>"``."""
    digest = hashlib.sha256(f"{int(global_seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def shard_of(name: str, num_shards: int) -> int:
    """The shard (0 .. num_shards - 1) a sample belongs to: a hash of its name, independent of the seed.

    Hash-based, so every machine assigns the same samples to the same shard even if their
    folder listings differ in order or content.
    """
    digest = hashlib.sha256(b"shard/" + name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") % int(num_shards)


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` (0 <= K < N) into ``(K, N)``; raises ValueError with a one-line reason."""
    parts = str(text).split("/")
    if len(parts) != 2:
        raise ValueError(f"shard must look like K/N (e.g. 0/4), got '{text}'")
    try:
        k, n = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"shard must look like K/N with whole numbers (e.g. 0/4), got '{text}'") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"shard K/N needs 0 <= K < N (shards are numbered from 0), got '{text}'")
    return k, n
