"""Untrained receivers for the training-free families: a KV cache as the prefix of the receiver's
own tokens (LatentMAS, KVComm), and an activation grafted into its forward pass (activation
communication). CIPHER's rows need no agent of their own: ``ReceiverAgent`` reads an
EMBEDDINGS message's rows where the plan text would stand.

Both decode one episode at a time: each episode's prefix (or graft) is its own, so replies are
not batched across episodes (``prefetch`` is absent, ``can_respond_together`` False).
"""

from __future__ import annotations

import contextlib

import torch

from interlat_bench.collectors.kv import decoder_layers
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.methods.agents import ReceiverAgent


def prefix_cache(model, message: Message):
    """(cache, blocked): the message's KV as a cache for ``model``, every layer as long as the
    longest; a layer shipped shorter (KVComm's sink-only layers) is padded with zeros that its
    attention must never read: ``blocked`` maps it to those positions (start, end)."""
    from transformers import DynamicCache

    embed = model.get_input_embeddings().weight
    cache, blocked = DynamicCache(config=model.config), {}
    length = message.rows
    for i, (k, v) in enumerate(message.kv):
        n = k.shape[-2]
        if n < length:
            k = torch.cat([k, k.new_zeros(k.shape[0], length - n, k.shape[-1])], dim=1)
            v = torch.cat([v, v.new_zeros(v.shape[0], length - n, v.shape[-1])], dim=1)
            blocked[i] = (n, length)
        cache.update(k[None].to(embed.device, embed.dtype), v[None].to(embed.device, embed.dtype), i)
    return cache, blocked


def _blocking(span: tuple[int, int]):
    """A pre-hook on a layer's attention: its mask stops every query from reading ``span``."""
    start, end = span

    def hook(module, args, kwargs):
        x, mask, cache = kwargs["hidden_states"], kwargs.get("attention_mask"), kwargs.get("cache")
        q = x.shape[1]
        kv_len = q + (cache.layers[module.layer_idx].get_seq_length() if cache is not None else 0)
        if mask is None:  # causal without padding: spelled out, so that the span can be masked
            rows = torch.arange(q, device=x.device)[:, None] + (kv_len - q)
            mask = (torch.arange(kv_len, device=x.device)[None] <= rows)[None, None]
        mask = mask.clone()
        if mask.dtype == torch.bool:
            mask[..., start:end] = False
        else:
            mask[..., start:end] = torch.finfo(mask.dtype).min
        return args, {**kwargs, "attention_mask": mask}

    return hook


@contextlib.contextmanager
def hooks(pairs):
    """Register (module, pre-hook with kwargs) pairs for the duration of the block."""
    handles = [module.register_forward_pre_hook(hook, with_kwargs=True) for module, hook in pairs]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _HookedAgent(ReceiverAgent):
    """A receiver whose forward passes run under hooks of its episode (``_hooks``), one episode
    at a time: not Prefetching (``prefetch`` None), never in lockstep."""

    prefetch = None

    def can_respond_together(self) -> bool:
        return False

    def _hooks(self):
        raise NotImplementedError

    def respond(self, observation=None, info=None) -> str:
        with self._hooks():
            return super().respond(observation, info)

    def choose(self, observation, options, info=None) -> str:
        with self._hooks():
            return super().choose(observation, options, info)


class KVPrefixAgent(_HookedAgent):
    """The receiver reads its prompt on top of the sender's KV cache: its tokens take the
    positions after the cache's, as if they followed the sender's prompt in one sequence."""

    def _open(self, prompt, message, sample) -> None:
        super()._open(prompt, message, sample)
        self._blocked = {}
        if message.kind is MessageKind.KV and message.kv and message.rows:
            self.past, self._blocked = prefix_cache(self.lm.model, message)
            self.history_ids = [-1] * message.rows + self.history_ids

    def _hooks(self):
        layers = decoder_layers(self.lm.model)
        return hooks([(layers[i].self_attn, _blocking(span)) for i, span in self._blocked.items()])

    @torch.no_grad()
    def prefix_attention(self, prompt: str, message: Message, sample) -> torch.Tensor:
        """KVComm's layer importance for one episode (``layer_importance.py``): at each layer, the
        attention the receiver's prompt tokens give the message's positions, the first (an
        attention sink) left out, summed over those positions and averaged over heads and tokens."""
        from interlat_bench.harness.core.generation import backbone_and_head, cache_arg

        self._open(prompt, message, sample)
        model, sent = self.lm.model, message.rows
        decoder, _ = backbone_and_head(model)
        x = self.pending[None]
        positions = torch.arange(sent, sent + x.shape[1], device=x.device)[None]
        previous = model.config._attn_implementation
        model.set_attn_implementation("eager")  # the fused kernels do not return attention weights
        try:
            with self._hooks():
                out = decoder(inputs_embeds=x, position_ids=positions, **cache_arg(decoder, self.past),
                              use_cache=True, output_attentions=True)
        finally:
            model.set_attn_implementation(previous)
        return torch.stack([a[0, :, :, 1:sent].float().sum(-1).mean() for a in out.attentions]).cpu()


def graft(own: torch.Tensor, sent: torch.Tensor, op: str) -> torch.Tensor:
    """Activation communication's f(receiver's state, sender's state)."""
    if op == "replace":
        return sent
    if op == "sum":
        return own + sent
    if op == "mean":
        return (own + sent) / 2
    raise ValueError(f"op must be replace, sum or mean, got {op!r}")


class ActivationAgent(_HookedAgent):
    """Where the receiver's prompt enters its layer ``j``, the state at the prompt's last token
    becomes f(its own, the sender's), once, during the prompt's prefill (later tokens read it
    through the cache)."""

    def __init__(self, *args, j: int, op: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.j, self.op = j, op

    def _open(self, prompt, message, sample) -> None:
        super()._open(prompt, message, sample)
        self._sent = message.latents[0] if message.kind is MessageKind.ACTIVATION and message.latents is not None \
            else None
        # The prompt's last token: the first forward feeds the prompt, and when ranking replies
        # their shared start after it (``choose``), so the position is counted, not taken as the last.
        self._at = len(self.pending) - 1

    def _hook(self, module, args, kwargs):
        if self._sent is None:
            return None
        x = args[0] if args else kwargs["hidden_states"]
        x = x.clone()
        x[:, self._at] = graft(x[:, self._at], self._sent.to(x.device, x.dtype), self.op)
        self._sent = None  # once: the prompt's prefill
        return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

    def _hooks(self):
        return hooks([(decoder_layers(self.lm.model)[self.j], self._hook)])
