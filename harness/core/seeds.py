"""Per-item seeds: the one place a random stream is derived for a task or sample.

A result must not depend on the order, batching, rank or resumption that produced it, so
every random draw about one item (a sampled plan, a sampled reply, a perturbation) is seeded
from the run's seed and the item's id alone. ``stream`` separates draws about the same item
(decoding and a perturbation must not share their randomness).
"""

from __future__ import annotations

import hashlib


def item_seed(seed: int, item_id: str, stream: str = "") -> int:
    """A 63-bit seed from (seed, item id, stream); the same inputs always give the same seed."""
    text = f"{seed}\0{item_id}" + (f"\0{stream}" if stream else "")
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)
