"""AppendLayer must hold exactly what transformers' concatenating DynamicLayer holds."""

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from interlat_bench.harness.core.kv_cache import AppendLayer, appendable


def _kv(batch, length, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 4, generator=g), torch.randn(batch, 2, length, 4, generator=g)


def test_append_layer_matches_concatenation_through_crop_and_batch_edits():
    ref, ours = DynamicLayer(), AppendLayer()
    ops = [("update", 10), ("update", 1), ("update", 3), ("crop", 2), ("update", 4),
           ("reorder", None), ("update", 2), ("select", None), ("update", 1), ("update", 300), ("repeat", None), ("update", 2)]
    for step, (op, n) in enumerate(ops):
        for layer in (ref, ours):
            if op == "update":
                layer.update(*_kv(layer.keys.shape[0] if layer.is_initialized else 2, n, step))
            elif op == "crop":
                layer.crop(-n)
            elif op == "reorder":  # same batch size, new tensors: the buffer no longer backs them
                layer.reorder_cache(torch.tensor([1, 0]))
            elif op == "select":
                layer.batch_select_indices(torch.tensor([1]))
            else:
                layer.batch_repeat_interleave(3)
        assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values), (step, op)
        assert ours.get_seq_length() == ref.get_seq_length()


def test_append_layer_writes_in_place_while_it_has_room():
    layer = AppendLayer()
    layer.update(*_kv(1, 20, 0))
    ptr = layer.keys.data_ptr()
    for i in range(5):
        layer.update(*_kv(1, 1, i + 1))
    assert layer.keys.data_ptr() == ptr and layer.get_seq_length() == 25  # no copy of the 20 rows


def test_appendable_keeps_a_filled_cache_and_replaces_only_plain_layers():
    data = [_kv(1, 7, i) for i in range(3)]
    cache = appendable(DynamicCache(ddp_cache_data=data), config=None)
    assert all(type(layer) is AppendLayer for layer in cache.layers)
    for layer, (k, v) in zip(cache.layers, data):
        assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)
