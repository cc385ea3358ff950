"""Shape models: a published architecture with random weights, for time and memory at paper
scale where the weights cannot travel (a device call carries 64 MiB; a 7B model is 15 GB).

``shape:NAME`` takes the architecture numbers below, copied from each model's published
``config.json``; ``shape:PATH`` reads a ``config.json`` (any causal LM transformers knows). The
weights are random (seeded), the tokenizer is SmolLM2's (its ids all lie below every vocabulary
here; the embedding and output matrices keep the published vocabulary size), and generation runs
to its token budget: random weights have no end of turn to stop at, and a fixed length is what
makes timings comparable. Their runs are timing-only (``is_shape``): kept out of quality tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interlat_bench.harness.core.errors import UserError

PREFIX = "shape:"

# Published config.json numbers (Qwen/Qwen2.5-7B-Instruct, Qwen/Qwen2.5-0.5B-Instruct,
# HuggingFaceTB/SmolLM2-135M-Instruct, meta-llama/Llama-3.1-8B-Instruct); what is not listed takes transformers' default for the type.
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-7b": {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
                   "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                   "vocab_size": 152064, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
                   "rms_norm_eps": 1e-6, "tie_word_embeddings": False},
    "qwen2.5-0.5b": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
                     "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                     "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
                     "rms_norm_eps": 1e-6, "tie_word_embeddings": True},
    # The offline default's architecture: costs measured on it need no scaling for a SmolLM2 grid.
    "smollm2-135m": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
                     "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                     "vocab_size": 49152, "max_position_embeddings": 8192, "rope_theta": 100000.0,
                     "rms_norm_eps": 1e-5, "tie_word_embeddings": True},
    "llama-3.1-8b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                     "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                     "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
                     "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                     "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
}


def is_shape(ref: str | None) -> bool:
    """Whether a model reference is a shape model (random weights: timing only)."""
    return bool(ref) and ref.startswith(PREFIX)


def architecture(ref: str) -> dict[str, Any]:
    """The config numbers of ``shape:NAME`` or ``shape:PATH`` (a config.json), checked in one line."""
    name = ref[len(PREFIX):]
    if name in SHAPES:
        return dict(SHAPES[name])
    path = Path(name)
    if path.suffix != ".json":
        raise UserError(f"model {ref!r}: expected shape:NAME ({', '.join(SHAPES)}) or shape:PATH/config.json")
    try:
        numbers = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"model {ref!r}: cannot read {path} as a config.json ({exc})") from None
    if not isinstance(numbers, dict) or "model_type" not in numbers:
        raise UserError(f"model {ref!r}: {path} has no 'model_type' (expected a Hugging Face config.json)")
    return numbers


def build(ref: str, tokenizer, seed: int, dtype, device: str):
    """The random-weight model of ``ref``, created on ``device`` in ``dtype`` (seeded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    numbers = architecture(ref)
    if numbers.get("vocab_size", 0) < len(tokenizer):
        raise UserError(f"model {ref!r}: vocab_size {numbers.get('vocab_size')} is below the tokenizer's "
                        f"{len(tokenizer)} tokens")
    numbers.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    try:
        config = AutoConfig.for_model(**numbers)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"model {ref!r}: not a configuration transformers can build ({exc})") from None
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=dtype)
