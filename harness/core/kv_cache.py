"""A KV cache that appends in place, so a decode step costs the new rows, not the whole cache.

transformers' DynamicLayer concatenates (copies) every layer's keys and values on each
decoded token: O(cached length) per token. At 1,400 cached tokens on a 2-core CPU that
copy is about a third of a SmolLM2 decode step. Here keys/values are views of a buffer
with spare room that grows by half when full; everything that reads a DynamicLayer
(attention, masks, ``get_seq_length``, ``crop``) sees the same tensors as before.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

_MIN_SPARE = 256  # rows of room added on (re)allocation: a reply's worth of tokens


class AppendLayer(DynamicLayer):
    """DynamicLayer whose ``update`` writes into spare capacity instead of concatenating."""

    _room: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if not self._fits(key_states, end):
            self._reallocate(key_states, value_states, start, end)
        k_buf, v_buf = self._room
        k_buf[..., start:end, :] = key_states
        v_buf[..., start:end, :] = value_states
        self.keys, self.values = k_buf[..., :end, :], v_buf[..., :end, :]
        return self.keys, self.values

    def _fits(self, new: torch.Tensor, end: int) -> bool:
        """Our buffer still backs self.keys (crop keeps it; batch edits replace it) and has room."""
        if self._room is None:
            return False
        buf = self._room[0]
        if end > buf.shape[-2] or new.shape[:2] != buf.shape[:2] or new.dtype != buf.dtype:
            return False
        return self.keys.numel() == 0 or (self.keys.data_ptr() == buf.data_ptr()
                                          and self.keys.stride() == buf.stride())

    def _reallocate(self, key_states, value_states, start: int, end: int) -> None:
        capacity = end + max(_MIN_SPARE, end // 2)
        room = []
        for new, old in ((key_states, self.keys), (value_states, self.values)):
            buf = new.new_empty(*new.shape[:2], capacity, new.shape[-1])
            if start:
                buf[..., :start, :] = old
            room.append(buf)
        self._room = (room[0], room[1])


def appendable(cache: Cache | None, config) -> Cache:
    """``cache`` (or a new one for ``config``) with every plain DynamicLayer made an AppendLayer.

    Sliding-window and other special layers are left as they are.
    """
    if cache is None:
        cache = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            grown = AppendLayer()
            if layer.is_initialized and layer.keys.numel():
                grown.update(layer.keys, layer.values)
            cache.layers[i] = grown
    return cache


def windowed(config) -> bool:
    """Whether some layer attends within a sliding window (Gemma-3, Mistral). Such a window
    counts cache positions, so a cache row with gaps (padding between turns) would let a
    query see fewer tokens than the same row without them."""
    types = getattr(config, "layer_types", None)
    if types is not None:
        return any(t != "full_attention" for t in types)
    return getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
