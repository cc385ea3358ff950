"""The communication adapter that maps a sender's latent message into the receiver's input space.

SPEC section 3. For a message M (L rows of sender last-layer states):

1. input projection H_s -> H_r, only when the sizes differ (cross-family); identity otherwise;
2. x = LN(M); a = MultiHeadSelfAttention(x); o = LN(x + a);
3. r = s * o; out = s_out * (r + Linear2(LN(GELU(Linear1(r))))) with learnable scalars s, s_out.

Output scale: the first LayerNorm maps every row to norm ~sqrt(H_r) whatever the input scale
(last-layer states of SmolLM2-135M have row norm ~47), and s (0.2) and s_out (0.1) then bring
the output to a norm of order 1 (about 0.06 * sqrt(H_r) at initialisation: ~1.5 for H_r = 576),
the same order as the receiver's token embeddings (~2.8 for SmolLM2-135M). tests/test_adapter.py
pins this.

Positions (`positions`): SPEC's attention has none, so it treats the rows as a set and a row
cannot single out its neighbour. That matters because row t is the state that *predicted* plan
token t (where the sender hesitated, it holds the candidates), while row t + 1 is the state that
*read* token t as its input: on the probe at 8 facts x 4 options a linear probe names a colour
token from its own row on 90.5% of held-out plans and from the next row on 100%
(bench/row_probe.py). `positions=
"rope"` rotates queries and keys by row index (rotary embeddings, base 10000), which lets a head
attend by offset; "none" (the default) is the SPEC's adapter, and checkpoints saved before the
option load as such.

Padded batches: `padding_mask` (B, L) bool, True = padding (the nn.MultiheadAttention
convention). Padded rows are excluded as attention keys, so they cannot change the outputs of
real rows, and their own outputs are set to zero.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interlat_bench.harness.core.atomic import write_bytes

__all__ = ["CommAdapter", "ADAPTER_FILENAME", "POSITIONS", "effective_heads", "rotate"]

# File name used when `save`/`load` are given a directory instead of a ".safetensors" path.
ADAPTER_FILENAME = "comm_adapter.safetensors"
_FORMAT = "interlat-bench/comm-adapter"
_FORMAT_VERSION = 1
POSITIONS = ("none", "rope")


def effective_heads(dim: int, heads: int) -> int:
    """The number of attention heads actually used: `heads` if it divides `dim`, else the
    largest divisor of `dim` that is <= `heads` (nn.MultiheadAttention needs dim % heads == 0).
    E.g. dim 576 (SmolLM2-135M) keeps 8 heads; dim 900 with heads 8 uses 6."""
    if dim < 1 or heads < 1:
        raise ValueError(f"dim and heads must be positive, got dim={dim}, heads={heads}")
    for h in range(min(heads, dim), 0, -1):
        if dim % h == 0:
            return h
    return 1  # unreachable: 1 divides everything


def rotate(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding of (B, heads, L, d) queries or keys, d even: each pair of
    dimensions (i, i + d/2) turned by the angle pos * base^(-2i/d)."""
    half = x.shape[-1] // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class CommAdapter(nn.Module):
    """Trainable adapter between sender latents (B, L, H_s) and receiver embeddings (B, L, H_r).

    The hidden width of the MLP branch (Linear1 / Linear2) is H_r: SPEC does not fix it, and a
    square MLP keeps the adapter small relative to the receiver.
    """

    def __init__(
        self,
        sender_dim: int,
        receiver_dim: int,
        heads: int = 8,
        s_init: float = 0.2,
        s_out_init: float = 0.1,
        dropout: float = 0.0,
        positions: str = "none",
    ) -> None:
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        if sender_dim < 1 or receiver_dim < 1:
            raise ValueError(f"dims must be positive, got {sender_dim} -> {receiver_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.sender_dim = int(sender_dim)
        self.receiver_dim = int(receiver_dim)
        self.requested_heads = int(heads)
        # If `heads` does not divide receiver_dim, use the largest divisor <= heads instead of
        # failing (see effective_heads).
        self.heads = effective_heads(self.receiver_dim, self.requested_heads)
        self.s_init = float(s_init)
        self.s_out_init = float(s_out_init)
        self.dropout_p = float(dropout)
        self.positions = positions
        if positions == "rope" and (self.receiver_dim // self.heads) % 2:
            raise ValueError(f"positions='rope' needs an even head width, got {self.receiver_dim // self.heads}")

        self.in_proj: nn.Module = (
            nn.Linear(self.sender_dim, self.receiver_dim)
            if self.sender_dim != self.receiver_dim
            else nn.Identity()
        )
        self.ln_in = nn.LayerNorm(self.receiver_dim)
        self.attn = nn.MultiheadAttention(
            self.receiver_dim, self.heads, dropout=self.dropout_p, batch_first=True
        )
        self.ln_attn = nn.LayerNorm(self.receiver_dim)
        self.s = nn.Parameter(torch.tensor(self.s_init, dtype=torch.float32))
        self.s_out = nn.Parameter(torch.tensor(self.s_out_init, dtype=torch.float32))
        self.fc1 = nn.Linear(self.receiver_dim, self.receiver_dim)
        self.act = nn.GELU()
        self.ln_mlp = nn.LayerNorm(self.receiver_dim)
        self.fc2 = nn.Linear(self.receiver_dim, self.receiver_dim)
        self.drop = nn.Dropout(self.dropout_p)

    @property
    def has_input_projection(self) -> bool:
        return isinstance(self.in_proj, nn.Linear)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (enough to rebuild the module before loading weights)."""
        return {
            "sender_dim": self.sender_dim,
            "receiver_dim": self.receiver_dim,
            "heads": self.requested_heads,
            "s_init": self.s_init,
            "s_out_init": self.s_out_init,
            "dropout": self.dropout_p,
            **({"positions": self.positions} if self.positions != "none" else {}),
        }

    def forward(self, latents: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """latents: (B, L, H_s) or a single message (L, H_s); padding_mask: (B, L) bool with
        True = padding, or None. Returns (B, L, H_r) (or (L, H_r) for a single message), in the
        adapter's parameter dtype."""
        unbatched = latents.dim() == 2
        if unbatched:
            latents = latents.unsqueeze(0)
            if padding_mask is not None:
                padding_mask = padding_mask.unsqueeze(0)
        if latents.dim() != 3 or latents.shape[-1] != self.sender_dim:
            raise ValueError(
                f"expected latents (B, L, {self.sender_dim}), got {tuple(latents.shape)}"
            )
        bsz, length, _ = latents.shape
        if padding_mask is not None:
            if padding_mask.shape != (bsz, length):
                raise ValueError(
                    f"padding_mask must be (B, L) = {(bsz, length)}, got {tuple(padding_mask.shape)}"
                )
            padding_mask = padding_mask.to(device=latents.device, dtype=torch.bool)

        if length == 0:  # empty message: nothing to attend over
            out = latents.new_zeros(bsz, 0, self.receiver_dim, dtype=self.s.dtype)
            return out[0] if unbatched else out

        x = self.in_proj(latents.to(self.s.dtype))
        x = self.ln_in(x)
        key_mask = padding_mask
        if key_mask is not None:
            if not bool(key_mask.any()):
                key_mask = None
            else:
                # A row that is all padding would make softmax over no keys (NaN); let it
                # attend to its own (garbage) rows; its output is zeroed below anyway.
                all_pad = key_mask.all(dim=1, keepdim=True)
                key_mask = key_mask & ~all_pad
        a = self._attend(x, key_mask)
        o = self.ln_attn(x + self.drop(a))
        r = self.s * o
        h = self.fc2(self.drop(self.ln_mlp(self.act(self.fc1(r)))))
        out = self.s_out * (r + h)
        if padding_mask is not None:
            out = out.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        return out[0] if unbatched else out

    def _attend(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        if self.positions == "none":
            a, _ = self.attn(x, x, x, key_padding_mask=key_mask, need_weights=False)
            return a
        # The same projections and weights as nn.MultiheadAttention, with rotated queries and keys.
        bsz, length, dim = x.shape
        q, k, v = nn.functional.linear(x, self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.view(bsz, length, self.heads, dim // self.heads).transpose(1, 2) for t in (q, k, v))
        allowed = None if key_mask is None else ~key_mask[:, None, None, :]
        a = nn.functional.scaled_dot_product_attention(rotate(q), rotate(k), v, attn_mask=allowed,
                                                       dropout_p=self.dropout_p if self.training else 0.0)
        return self.attn.out_proj(a.transpose(1, 2).reshape(bsz, length, dim))

    # ------------------------------------------------------------------ persistence

    @staticmethod
    def _resolve(path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        return p if p.suffix == ".safetensors" else p / ADAPTER_FILENAME

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write weights and config atomically to one safetensors file (config in its metadata).

        `path` ending in ".safetensors" is the file; anything else is a directory (created if
        needed) that receives ADAPTER_FILENAME. Returns the file written."""
        from safetensors.torch import save as st_save

        target = self._resolve(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        metadata = {
            "format": _FORMAT,
            "format_version": str(_FORMAT_VERSION),
            "config": json.dumps(self.config(), sort_keys=True),
        }
        blob = st_save(tensors, metadata=metadata)
        write_bytes(target, blob)
        return target

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
    ) -> CommAdapter:
        """Rebuild an adapter written by `save` (same path rules) and load its weights (strict)."""
        from safetensors import safe_open

        source = cls._resolve(path)
        if not source.is_file():
            raise FileNotFoundError(f"no adapter checkpoint at {source}")
        with safe_open(str(source), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            if metadata.get("format") != _FORMAT:
                raise ValueError(f"{source} is not a CommAdapter checkpoint (metadata {metadata!r})")
            config = json.loads(metadata["config"])
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open API)
        adapter = cls(**config)
        adapter.load_state_dict(state, strict=True)
        return adapter.to(map_location)
