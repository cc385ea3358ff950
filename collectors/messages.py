"""Collect latent messages: the sender's plan tokens and the last-layer states that predicted them.

For each task the sender (a causal LM) reads ``prompt_template.format(task=...)`` wrapped in its
chat template as one user turn (with the generation prompt) and writes a plan y_1..y_L (the
EOS token, when reached, is y_L). The message M is (L x H): row i is the last-layer hidden
state after the final norm at the position that predicted y_i, i.e. at positions
[last prompt position, y_1, ..., y_{L-1}] of a teacher-forced pass over prompt + plan.

Storage: one content-addressed folder per (format version, config without batch size, tasks)::

    <cache>/messages/<key>/
        config.json          what was asked for (human-readable)
        parts/               one Parquet part per finished batch (removed after the merge)
        dataset/             the finished collection; its appearance (atomic rename) means done
            messages.parquet a Hugging Face ``datasets`` table, one row per task, in task order
            meta.json

Columns: task_id, task, plan_text, plan_token_ids (list<int32>), latents, rows, dim, sender,
generation (JSON). ``latents`` is M **flattened row-major** as list<float16> (rows * dim values;
reshape with the rows/dim columns): one list level is smaller and faster to read than a list
of rows. It is written with zstd and byte-stream-split encoding (about 1.8 bytes per value).

``keep_rows=K`` (compressed front end) keeps only the first K rows; the sender then stops after
K tokens, so plan_text / plan_token_ids hold those K tokens too (rows == len(plan_token_ids)).

Speed: prompts are prefilled without padding compute (the prefix all prompts share, i.e. the
chat template and the instruction, once per collection; then each prompt's own tokens alone)
and decoded as a batch from a left-padded KV cache, capturing only the last layer.

Under torchrun/accelerate (WORLD_SIZE > 1) every rank takes every world-th batch of the
(length-sorted) remaining tasks, writes its own parts, and rank 0 merges. Batches are formed
from the global task list exactly as in a single process, so the result is the same.

Run as a module (e.g. ``torchrun --nproc_per_node 2 -m interlat_bench.collectors.messages
--sender tiny-llama --tasks-file tasks.jsonl``); see ``main``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from interlat_bench.harness.core import distributed
from interlat_bench.harness.core.atomic import atomic_file, atomic_folder, set_aside, write_text
from interlat_bench.harness.core.generation import (
    Decoding,
    cache_arg,
    generate,
    left_pad,
    output_cache,
)
from interlat_bench.harness.core.prompts import (
    ALFWORLD_PLAN_PROMPT,
    MATH_PLAN_PROMPT,  # noqa: F401  (re-exported)
    PAPER_TOP_K,
    PAPER_TOP_P,
    planner_turns,
)
from interlat_bench.harness.core.seeds import item_seed
from interlat_bench.harness.core.settings import cache_dir, process_rank

if TYPE_CHECKING:
    from interlat_bench.harness.core.message import Message

# Planner prompts and the paper's sampling settings live in harness.core.prompts, shared with the
# benchmarks, so `--prompt math|alfworld` here and the harness collect under the same cache keys.

# Bump when the capture definition or the stored format changes (it enters the content key).
FORMAT_VERSION = 2  # 2: per-task sender time (gen_ms)

DATASET_DIR = "dataset"
PARTS_DIR = "parts"
DATA_FILE = "messages.parquet"
COLUMNS = ("task_id", "task", "plan_text", "plan_token_ids", "latents", "rows", "dim", "sender",
           "generation", "gen_ms")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CollectConfig:
    sender_model: str
    dtype: str = "float32"
    prompt_template: str = ALFWORLD_PLAN_PROMPT
    decoding: Decoding = field(default_factory=Decoding)
    seed: int = 0
    # Part of the content key below fp32 only (see key_dict). 64: on a 2-core CPU a SmolLM2
    # decode step of 64 rows takes about 1.5x one of 32 (matrix products run faster with more
    # rows), see bench/collect_speed.py. The KV cache of 64 rows of 1,000 tokens: 2.9 GB for
    # SmolLM2 in fp32, 8.4 GB for an 8B sender with 8 key/value heads in bf16.
    batch_size: int = 64
    keep_rows: int | None = None  # compressed front end: keep only the first K rows

    def __post_init__(self):
        if "{task}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {task}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.keep_rows is not None and self.keep_rows < 1:
            raise ValueError("keep_rows must be >= 1 (or None for all rows)")

    def effective_decoding(self) -> Decoding:
        """The decoding actually run: with keep_rows=K the sender stops after K tokens."""
        if self.keep_rows is None or self.keep_rows >= self.decoding.max_new_tokens:
            return self.decoding
        return Decoding(**{**asdict(self.decoding), "max_new_tokens": self.keep_rows})

    def key_dict(self) -> dict:
        """Everything that changes the stored content: seed only if sampling; batch size only
        below fp32, where the rows a batch holds change the plans (SmolLM2 in bf16: 21 of 128
        greedy plans the same at batches of 32 and 64; in fp32, all 128)."""
        dec = self.effective_decoding()
        d = {"sender": self.sender_model, "dtype": self.dtype, "prompt_template": self.prompt_template,
             "decoding": dec.key(), "keep_rows": self.keep_rows}
        if not dec.greedy:
            d["seed"] = self.seed
        if self.dtype not in ("float32", "fp32"):
            d["batch_size"] = self.batch_size
        return d

    def generation_settings(self) -> dict:
        return {**self.key_dict(), "seed": self.seed, "format_version": FORMAT_VERSION,
                "chat_template": "single user turn, add_generation_prompt=True",
                "capture": "last layer after final norm; rows = positions "
                           "[last prompt position, y_1..y_{L-1}]",
                "storage": "latents flat row-major float16, shape (rows, dim)"}


def content_key(cfg: CollectConfig, tasks: Sequence[tuple[str, str]]) -> str:
    blob = json.dumps({"version": FORMAT_VERSION, "config": cfg.key_dict(),
                       "tasks": [[str(i), str(t)] for i, t in tasks]},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prompt_ids(tokenizer, template: str, task: str) -> list[int]:
    """Token ids of the sender's prompt in its chat template: the template's example turns, if
    any, then one user turn with the task (``prompts.planner_turns``)."""
    text = tokenizer.apply_chat_template(planner_turns(template, task), add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


# ---------------------------------------------------------------------------- storage

def _features():
    from datasets import Features, List, Value

    return Features({
        "task_id": Value("string"), "task": Value("string"), "plan_text": Value("string"),
        "plan_token_ids": List(Value("int32")), "latents": List(Value("float16")),
        "rows": Value("int32"), "dim": Value("int32"), "sender": Value("string"),
        "generation": Value("string"), "gen_ms": Value("float32"),
    })


def _records_table(records: dict[str, list]):
    """A `datasets` table: its schema metadata carries the features, so the Parquet file loads
    back as the same Hugging Face dataset (``load_dataset("parquet", data_files=...)``)."""
    from datasets import Dataset

    return Dataset.from_dict(records, features=_features()).data.table


def _write_table(table, path: Path) -> None:
    """Write Parquet atomically: zstd, byte-stream-split latents."""
    import pyarrow.parquet as pq

    kwargs = {"compression": "zstd", "use_dictionary": [c for c in COLUMNS if c != "latents"]}
    with atomic_file(path) as tmp:
        try:
            pq.write_table(table, tmp, use_byte_stream_split=["latents.list.element"], **kwargs)
        except (NotImplementedError, ValueError, TypeError):  # older pyarrow: no BSS for float16
            pq.write_table(table, tmp, **kwargs)


def _read_table(path: Path, columns: list[str] | None = None):
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns)


def _parts(folder: Path) -> list[Path]:
    return sorted((folder / PARTS_DIR).glob("part-*.parquet"))


def _done_ids(folder: Path) -> set[str]:
    ids: set[str] = set()
    for part in _parts(folder):
        ids.update(_read_table(part, ["task_id"]).column("task_id").to_pylist())
    return ids


def is_done(folder: str | os.PathLike) -> bool:
    return (Path(folder) / DATASET_DIR / DATA_FILE).exists()


def _unreadable(folder: Path, count: int) -> str | None:
    """What is wrong with a finished collection on disk (unreadable Parquet, wrong row
    count), or None; reads the file's footer and task ids only."""
    import pyarrow.parquet as pq

    path = folder / DATASET_DIR / DATA_FILE
    try:
        rows = pq.read_metadata(path).num_rows
        pq.read_table(path, columns=["task_id"])
    except Exception as exc:  # pyarrow raises several types for a damaged file
        return f"{path.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None if rows == count else f"{path.name}: {rows} rows for {count} tasks"


def stored_ids(folder: str | os.PathLike) -> set[str]:
    """Task ids whose messages are already on disk (finished collection or resumable parts)."""
    folder = Path(folder)
    if is_done(folder):
        try:
            return set(_read_table(folder / DATASET_DIR / DATA_FILE, ["task_id"]).column("task_id").to_pylist())
        except Exception:  # a damaged file: collect_messages sets it aside and rebuilds it
            return set()
    return _done_ids(folder) if (folder / PARTS_DIR).is_dir() else set()


def _write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False))


@contextlib.contextmanager
def _writing(folder: Path):
    """Hold a shared lock on the collection while this process writes parts, so that a
    concurrent run sharing the cache never deletes ``parts/`` under it; the last writer out
    (an exclusive lock, taken without waiting) removes the parts of a finished collection."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".writers.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # another writer is still at work: it cleans up when it leaves
            try:
                if is_done(folder):
                    shutil.rmtree(folder / PARTS_DIR, ignore_errors=True)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _merge(folder: Path, cfg: CollectConfig, tasks: Sequence[tuple[str, str]]) -> None:
    """Parts -> one dataset in task order, written to a temp folder renamed into place.
    The parts stay until the last writer leaves (``_writing``)."""
    import pyarrow as pa

    if is_done(folder):  # a concurrent run merged first; the content is the same
        return

    parts = _parts(folder)
    table = pa.concat_tables([_read_table(p) for p in parts]) if parts else None
    first: dict[str, int] = {}
    for i, tid in enumerate(table.column("task_id").to_pylist() if table is not None else []):
        first.setdefault(tid, i)  # a task written twice (concurrent runs) has the same content
    missing = [tid for tid, _ in tasks if tid not in first]
    if missing:
        raise RuntimeError(f"{folder}: {len(missing)} tasks missing after collection, e.g. {missing[:3]}")
    table = table.take(pa.array([first[tid] for tid, _ in tasks], type=pa.int64()))
    # A concurrent writer that finished first keeps its dataset: the content is the same.
    with atomic_folder(folder / DATASET_DIR) as tmp:
        _write_table(table.combine_chunks(), tmp / DATA_FILE)
        _write_json(tmp / "meta.json", {"count": len(tasks), "key": folder.name,
                                        "columns": list(COLUMNS),
                                        "generation": cfg.generation_settings()})


# ---------------------------------------------------------------------------- collection

def collection_path(cfg: CollectConfig, tasks: Sequence[tuple[str, str]],
                    out_root: str | os.PathLike | None = None) -> Path:
    """Where ``collect_messages`` puts (or has put) this collection."""
    root = Path(out_root) if out_root is not None else cache_dir() / "messages"
    return root / content_key(cfg, [(str(i), str(t)) for i, t in tasks])


def collect_messages(cfg: CollectConfig, tasks: Sequence[tuple[str, str]],
                     out_root: str | os.PathLike | None = None, progress: Progress | None = None,
                     *, loaded=None) -> Path:
    """Collect (or reuse) the messages for ``tasks`` = [(task_id, task_text), ...].

    Returns the collection folder (give it to ``load_messages``). Reuses a finished one
    without loading the model; resumes from ``parts/`` after an interruption.
    ``progress(done, total)`` is called after each batch with this process's task counts.
    ``loaded`` is an already loaded ``LoadedModel`` for ``cfg.sender_model`` (else it is loaded).
    """
    tasks = [(str(i), str(t)) for i, t in tasks]
    if not tasks:
        raise ValueError("no tasks to collect")
    if len({i for i, _ in tasks}) != len(tasks):
        raise ValueError("task ids must be unique")
    folder = collection_path(cfg, tasks, out_root)
    if is_done(folder):
        problem = _unreadable(folder, len(tasks))
        if problem is None:
            return folder
        set_aside(folder, problem, log=lambda line: print(line, file=sys.stderr))
    rank, world, owned = distributed.join()
    try:
        with _writing(folder):
            _collect(cfg, tasks, folder, rank, world, progress, loaded)
    finally:
        distributed.leave(owned)
    return folder


def _collect(cfg, tasks, folder: Path, rank: int, world: int, progress, loaded) -> None:
    (folder / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _write_json(folder / "config.json", {"key": folder.name, "config": cfg.key_dict(),
                                             "tasks": len(tasks), "format_version": FORMAT_VERSION})
    done = _done_ids(folder)
    distributed.barrier(world)  # every rank has listed the old parts before any rank writes new ones
    todo = [(tid, text) for tid, text in tasks if tid not in done]
    if todo:
        if loaded is None:
            from interlat_bench.harness.core.models import load

            loaded = load(cfg.sender_model, cfg.dtype)
        tok = loaded.tokenizer
        encoded = [prompt_ids(tok, cfg.prompt_template, text) for _, text in todo]
        # Batches of similar prompt length (narrow padded KV cache), longest first; ranks take
        # every world-th batch, so batch contents do not depend on the number of processes.
        order = sorted(range(len(todo)), key=lambda k: -len(encoded[k]))
        batches = [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
        mine = batches[rank::world]
        total, finished = sum(len(b) for b in mine), 0
        settings = json.dumps(cfg.generation_settings(), sort_keys=True)
        stop = loaded.stop_ids
        prefix = _shared_prefix(loaded.model, encoded) if SHARE_PREFILL else None
        for batch in mine:
            if world == 1 and is_done(folder):  # another run sharing the cache finished it
                break
            records = _generate_batch(loaded, cfg, [todo[k] for k in batch],
                                      [encoded[k] for k in batch], stop, settings, prefix)
            name = hashlib.sha256("\0".join(records["task_id"]).encode()).hexdigest()[:16]
            _write_table(_records_table(records), folder / PARTS_DIR / f"part-{name}.parquet")
            finished += len(batch)
            if progress is not None:
                progress(finished, total)
    distributed.barrier(world)
    if world == 1:
        _merge(folder, cfg, tasks)
        return
    import torch.distributed as dist

    error = [None]
    if rank == 0:
        try:
            _merge(folder, cfg, tasks)
        except Exception as exc:  # tell the other ranks instead of leaving them waiting
            error = [f"{type(exc).__name__}: {exc}"]
    dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        raise RuntimeError(f"merging {folder} failed on rank 0: {error[0]}")


# Prefill prompts with little padding compute: the prefix all prompts share (chat template
# and instruction) once per collection, then the prompts' own tokens in groups of similar
# length, gathered into one KV cache for batched decoding. False: one plain left-padded batch
# prefill.
SHARE_PREFILL = True
# Rows join a prefill group while rows x longest own part stay within this many positions:
# enough rows for efficient matrix products, few enough that a group's activations stay small.
PREFILL_GROUP_TOKENS = 1024


@dataclass
class _Prefix:
    length: int
    kv: list  # per layer (keys, values), batch 1


def _kv_layers(cache) -> list | None:
    """Per-layer (keys, values) of a plain full-attention DynamicCache, else None."""
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


@torch.no_grad()
def _shared_prefix(model, seqs: list[list[int]]) -> _Prefix | None:
    """KV of the longest common prefix of all prompts (each keeps >= 2 tokens of its own)."""
    limit = min(len(s) for s in seqs) - 2
    n = 0
    while n < limit and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    if n == 0:
        return None
    dev = next(model.parameters()).device
    out = model.get_decoder()(input_ids=torch.tensor([seqs[0][:n]], device=dev), use_cache=True)
    kv = _kv_layers(output_cache(out))  # None for sliding-window / hybrid caches
    return _Prefix(n, kv) if kv is not None else None


def _prefill_groups(lengths: list[int], budget: int) -> list[list[int]]:
    """Row indices in groups of similar length: longest first, a group closing when one more
    row would take rows x its longest length past ``budget`` (a group has at least one row)."""
    groups: list[list[int]] = []
    for k in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= budget:
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


@torch.no_grad()
def _prompt_cache(model, seqs: list[list[int]], prefix: _Prefix):
    """(cache, mask, last ids): every prompt but its last token in one KV cache.

    A row of the cache is [left padding][shared prefix][gap][own tokens], the mask 0 on the
    padding and the gap; positions follow the mask (``_forward`` counts them the same way), so
    decoding sees each prompt as if it had been prefilled alone.
    """
    from transformers import DynamicCache

    dev = next(model.parameters()).device
    decoder, n = model.get_decoder(), prefix.length
    own = [s[n:-1] for s in seqs]
    parts = [None] * len(seqs)  # per row: (per-layer (keys, values), mask), batch 1 each
    for group in _prefill_groups([len(o) for o in own], PREFILL_GROUP_TOKENS):
        ids, own_mask = left_pad([own[k] for k in group], 0, dev)  # pad ids are masked out
        mask = torch.cat([own_mask.new_ones(len(group), n), own_mask], dim=-1)
        kv = [(keys.expand(len(group), -1, -1, -1), values.expand(len(group), -1, -1, -1))
              for keys, values in prefix.kv]
        out = decoder(input_ids=ids, attention_mask=mask,
                      position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, n:],
                      **cache_arg(decoder, DynamicCache(ddp_cache_data=kv)), use_cache=True)
        layers = _kv_layers(output_cache(out))
        for r, k in enumerate(group):
            parts[k] = ([(keys[r:r + 1], values[r:r + 1]) for keys, values in layers], mask[r:r + 1])
    width = max(m.shape[-1] for _, m in parts)

    def stack(tensors):  # (1, ..., len_i, d) each -> (B, ..., width, d), zeros on the left
        return torch.cat([torch.nn.functional.pad(t, (0, 0, width - t.shape[-2], 0)) for t in tensors])

    cache = DynamicCache(ddp_cache_data=[
        (stack([kv[i][0] for kv, _ in parts]), stack([kv[i][1] for kv, _ in parts]))
        for i in range(len(prefix.kv))])
    mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[-1], 1), value=0) for _, m in parts])
    mask[:, -1] = 1  # the last prompt token, which decoding feeds first
    last = torch.tensor([[s[-1]] for s in seqs], device=dev)
    return cache, mask, last


def _generate_batch(loaded, cfg: CollectConfig, items, seqs, stop: set[int], settings: str,
                    prefix: _Prefix | None = None) -> dict:
    model, tok = loaded.model, loaded.tokenizer
    dev = next(model.parameters()).device
    dec = cfg.effective_decoding()
    start = time.perf_counter()
    gens = None if dec.greedy else [
        torch.Generator(device=dev).manual_seed(item_seed(cfg.seed, tid)) for tid, _ in items]
    if prefix is not None:
        cache, mask, ids = _prompt_cache(model, seqs, prefix)
    else:
        cache = None
        ids, mask = left_pad(seqs, tok.pad_token_id if tok.pad_token_id is not None else 0, dev)
    out = generate(model, eos_ids=stop, dec=dec, input_ids=ids, attention_mask=mask,
                   past_key_values=cache, capture_hidden=True, generator=gens)
    # Sender time per task: its share of the batch (latency reports per sample).
    share_ms = (time.perf_counter() - start) * 1000 / max(len(items), 1)
    records: dict[str, list] = {c: [] for c in COLUMNS}
    for (tid, text), toks, hidden in zip(items, out.token_ids, out.hidden, strict=True):
        if cfg.keep_rows is not None:
            toks, hidden = toks[:cfg.keep_rows], hidden[:cfg.keep_rows]
        m16 = hidden.float().to(torch.float16).cpu()
        if not bool(torch.isfinite(m16).all()):
            raise RuntimeError(f"task {tid}: hidden states overflow float16 storage")
        records["task_id"].append(tid)
        records["task"].append(text)
        records["plan_text"].append(tok.decode(toks, skip_special_tokens=True))
        records["plan_token_ids"].append(list(toks))
        records["latents"].append(m16.reshape(-1).numpy())
        records["rows"].append(int(m16.shape[0]))
        records["dim"].append(int(hidden.shape[-1]))
        records["sender"].append(cfg.sender_model)
        records["generation"].append(settings)
        records["gen_ms"].append(share_ms)
    return records


# ---------------------------------------------------------------------------- reading

def _data_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / DATASET_DIR / DATA_FILE if (p / DATASET_DIR).is_dir() else p / DATA_FILE
    if not p.exists():
        raise FileNotFoundError(f"no finished message collection at {path}")
    return p


def load_messages(path: str | os.PathLike) -> dict[str, Message]:
    """task_id -> Message(kind="latent", text=plan, token_ids=plan ids, latents=(rows, dim) float32)."""
    import numpy as np

    from interlat_bench.harness.core.message import Message, MessageKind

    table = _read_table(_data_file(path))
    lat = table.column("latents").combine_chunks()
    values = lat.values.to_numpy(zero_copy_only=False)
    offsets = lat.offsets.to_numpy()
    cols = {c: table.column(c).to_pylist() for c in ("task_id", "plan_text", "plan_token_ids",
                                                     "rows", "dim")}
    gen_ms = table.column("gen_ms").to_pylist() if "gen_ms" in table.column_names else [0.0] * len(cols["rows"])
    out = {}
    for i, tid in enumerate(cols["task_id"]):
        m = values[offsets[i]:offsets[i + 1]].astype(np.float32).reshape(cols["rows"][i], cols["dim"][i])
        out[tid] = Message(kind=MessageKind.LATENT, text=cols["plan_text"][i],
                           token_ids=tuple(cols["plan_token_ids"][i]), latents=torch.from_numpy(m),
                           sender_ms=float(gen_ms[i] or 0.0))
    return out


# ---------------------------------------------------------------------------- command line

def read_tasks(path: str | os.PathLike) -> list[tuple[str, str]]:
    """JSONL, one task a line: id from task_id/id/unique_id (else the line number), text from
    task/problem/text."""
    tasks = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            tid = next((row[k] for k in ("task_id", "id", "unique_id") if k in row), n)
            text = next((row[k] for k in ("task", "problem", "text") if k in row), None)
            if text is None:
                raise ValueError(f"{path}:{n + 1}: no task/problem/text field")
            tasks.append((str(tid), str(text)))
    return tasks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m interlat_bench.collectors.messages",
                                 description="Collect latent messages (works under torchrun).")
    ap.add_argument("--sender", required=True, help="model reference (e.g. smollm2-135m, tiny-llama)")
    ap.add_argument("--tasks-file", required=True, help="JSONL with task_id and task per line")
    ap.add_argument("--prompt", default="alfworld",
                    help="alfworld, math (the harness's planner prompts), or a template containing {task}")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--sample", action="store_true", help="sample (default: greedy)")
    ap.add_argument("--temperature", type=float, default=None,
                    help="with --sample; default: the paper's for --prompt (alfworld 0.7, math 0.8), "
                         "else 0.7")
    ap.add_argument("--top-p", type=float, default=PAPER_TOP_P)
    ap.add_argument("--top-k", type=int, default=PAPER_TOP_K)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=CollectConfig.batch_size)
    ap.add_argument("--keep-rows", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="only the first N tasks")
    ap.add_argument("--out-root", default=None, help="default: <INTERLAT_CACHE>/messages")
    args = ap.parse_args(argv)
    tasks = read_tasks(args.tasks_file)[:args.limit]
    from interlat_bench.harness.core.prompts import FALLBACK_TEMPERATURE
    from interlat_bench.harness.core.registry import benchmarks

    # --prompt names a benchmark (its planner prompt and temperature), else it is the template.
    bench = benchmarks.get(args.prompt) if args.prompt in benchmarks.names() else None
    temperature = args.temperature if args.temperature is not None else \
        bench.plan_temperature if bench else FALLBACK_TEMPERATURE
    cfg = CollectConfig(
        sender_model=args.sender, dtype=args.dtype, prompt_template=bench.planner_prompt if bench else args.prompt,
        decoding=Decoding(greedy=not args.sample, temperature=temperature, top_p=args.top_p,
                          top_k=args.top_k, max_new_tokens=args.max_new_tokens),
        seed=args.seed, batch_size=args.batch_size, keep_rows=args.keep_rows)
    rank = process_rank()

    def report(done: int, total: int) -> None:
        print(f"[rank {rank}] {done}/{total} tasks", file=sys.stderr, flush=True)

    path = collect_messages(cfg, tasks, out_root=args.out_root, progress=report)
    if rank == 0:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
