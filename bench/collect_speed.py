"""Latent collection speed and storage: naive HF ``generate`` vs ``collect_messages``.

Run: ``MATH_DATA=../shared/data/math python bench/collect_speed.py`` (SmolLM2-135M, CPU ok).

- naive: batch 1, ``model.generate(output_hidden_states=True, return_dict_in_generate=True)``,
  which keeps every layer's state at every step; the last layer is then taken per step and
  kept as fp32 Python lists (the public collectors' format); fp32 weights;
- ours: ``collect_messages`` end to end (shared-prefix prefill, prompts prefilled in groups of
  similar length, batches of similar prompt length, generation, capture of the last layer
  only, Parquet parts, merge): at batch 1, and batched in each of ``--dtypes``.

A collection of a split hands all its tasks to ``collect_messages`` at once, which sorts them
into batches by prompt length; so the batched pipelines get all ``--tasks`` tasks in one
call. Batch 1 gains nothing from more tasks, so the naive pipeline and ours at batch 1 run on
every ``--naive-every``-th task in order of prompt length (the same spread of lengths), in
two halves (alternate tasks): one before the batched pipelines, one after, so that drifting
machine load shows as a difference between the halves.

Tokens/s counts generated plan tokens (one message row each). The roofline line puts them
next to this machine's ceiling for the model: the fp32 and bf16 matmul peaks measured in the
same run (2048^3 products), divided by 2 FLOPs per non-embedding parameter per token. Storage
is bytes per message row: fp32 lists as JSON text, fp32 lists as Arrow/Parquet list<float32>,
and our Parquet file (whole file, all columns) and its latents column alone.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from interlat_bench.benchmarks.math import math_dir
from interlat_bench.collectors import messages as mc
from interlat_bench.harness.core.generation import Decoding, eos_ids
from interlat_bench.harness.core.models import load
from interlat_bench.harness.core.prompts import MATH_PLAN_PROMPT
from interlat_bench.methods.sending import SENDER_DEFAULTS


def naive_collect(loaded, tasks, template: str, max_new_tokens: int) -> tuple[float, int, list]:
    model, tok = loaded.model, loaded.tokenizer
    dev = next(model.parameters()).device
    stop = sorted(eos_ids(tok))
    rows_per_task, tokens = [], 0
    start = time.perf_counter()
    for _, text in tasks:
        ids = torch.tensor([mc.prompt_ids(tok, template, text)], device=dev)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 output_hidden_states=True, return_dict_in_generate=True,
                                 eos_token_id=stop, pad_token_id=tok.pad_token_id)
        # hidden_states: per step, a tuple over all layers; [-1] is after the final norm.
        steps = len(out.sequences[0]) - ids.shape[1]
        last = [out.hidden_states[s][-1][0, -1].float().cpu().tolist() for s in range(steps)]
        rows_per_task.append(last)
        tokens += steps
    return time.perf_counter() - start, tokens, rows_per_task


def ours_collect(loaded, tasks, cfg: mc.CollectConfig, root: Path) -> tuple[float, int, Path]:
    start = time.perf_counter()
    path = mc.collect_messages(cfg, tasks, out_root=root, loaded=loaded)
    elapsed = time.perf_counter() - start
    tokens = sum(m.rows for m in mc.load_messages(path).values())
    return elapsed, tokens, path


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """This machine's matmul rate in FLOP/s (best of ``repeats`` n x n x n products)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def roofline(model) -> dict[str, float]:
    """Tokens/s a decoder could reach if each token cost 2 x (non-embedding parameters) FLOPs at
    this machine's matmul peak, per dtype: a compute-bound ceiling (attention and memory traffic
    ignored)."""
    params = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)
    return {str(dtype).removeprefix("torch."): matmul_peak(dtype) / (2 * params)
            for dtype in (torch.float32, torch.bfloat16)} | {"params": params}


def storage_report(tasks, naive_rows: list, ours_file: Path, hidden_size: int, tmp: Path) -> None:
    """Bytes per message row of the naive formats and of our Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows_total = sum(len(r) for r in naive_rows)
    json_path = tmp / "naive.json"
    json_path.write_text(json.dumps({tid: rows for (tid, _), rows in zip(tasks, naive_rows, strict=True)}))
    flat = [[v for row in rows for v in row] for rows in naive_rows]
    f32 = pa.table({"latents": pa.array(flat, type=pa.list_(pa.float32()))})
    f32_path = tmp / "naive_f32.parquet"
    pq.write_table(f32, f32_path)
    ours_rows = sum(m.rows for m in mc.load_messages(ours_file).values())
    meta = pq.read_metadata(ours_file)
    lat_idx = meta.schema.to_arrow_schema().get_field_index("latents")
    lat_bytes = sum(meta.row_group(g).column(lat_idx).total_compressed_size for g in range(meta.num_row_groups))
    ours_file_pr, ours_lat_pr = os.path.getsize(ours_file) / ours_rows, lat_bytes / ours_rows
    baselines = {
        "fp32 lists, JSON": os.path.getsize(json_path) / rows_total,
        "fp32 list<float32>, Arrow in memory": f32.nbytes / rows_total,
        "fp32 list<float32>, Parquet": os.path.getsize(f32_path) / rows_total,
    }
    print()
    print(f"{'storage (bytes per row, dim ' + str(hidden_size) + ')':<40}{'bytes/row':>10}"
          f"{'ours file':>11}{'ours latents':>14}")
    for label, bpr in baselines.items():
        print(f"{label:<40}{bpr:>10.0f}{ours_file_pr / bpr:>10.2f}x{ours_lat_pr / bpr:>13.2f}x")
    print(f"{'ours: Parquet, whole file (all columns)':<40}{ours_file_pr:>10.0f}")
    print(f"{'ours: latents column (fp16, zstd+BSS)':<40}{ours_lat_pr:>10.0f}")


def agreement(reference: dict, other: dict) -> str:
    """How far ``other``'s messages are from ``reference``'s: identical plans, and the states
    the two share a context for. The state at row t follows the prompt and plan tokens before
    t, so rows up to the first differing token compare like with like."""
    shared, common, plans = [], [], 0
    for tid, m in reference.items():
        a, b = m.token_ids, other[tid].token_ids
        plans += a == b
        first = next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)) - 1)
        common.append(first + 1)
        shared.append((m.latents[:first + 1], other[tid].latents[:first + 1]))
    a, b = torch.cat([x for x, _ in shared]), torch.cat([y for _, y in shared])
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    rel = (a - b).norm(dim=-1) / a.norm(dim=-1)
    mean_rows = sum(m.rows for m in reference.values()) / len(reference)
    return (f"{plans}/{len(reference)} plans identical, {sum(common) / len(common):.1f} of {mean_rows:.1f} rows "
            f"up to the first difference on average; over those {a.shape[0]} states: mean cosine "
            f"{float(cos.mean()):.5f}, relative error mean {float(rel.mean()):.3g}, max {float(rel.max()):.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--math-dir", default=None, help="folder with math500_test.jsonl (or MATH_DATA)")
    ap.add_argument("--tasks", type=int, default=128, help="MATH-500 tasks for the batched pipelines")
    ap.add_argument("--naive-every", type=int, default=4,
                    help="the naive pipeline and ours at batch 1 run on every N-th task (by prompt length)")
    ap.add_argument("--max-new-tokens", type=int, default=SENDER_DEFAULTS["plan_tokens"])
    ap.add_argument("--batch-size", type=int, default=mc.CollectConfig.batch_size)
    ap.add_argument("--dtypes", default="float32,bfloat16",
                    help="sender weights for the batched pipelines (comma-separated)")
    ap.add_argument("--sender", default="smollm2-135m")
    args = ap.parse_args()
    dtypes = [d for d in args.dtypes.split(",") if d]
    if "float32" not in dtypes:
        raise SystemExit("--dtypes: float32 is needed (the naive pipeline and the fidelity check use it)")

    tasks = mc.read_tasks(math_dir(args.math_dir) / "math500_test.jsonl")[:args.tasks]
    loaded = {d: load(args.sender, d) for d in dtypes}
    tok = loaded["float32"].tokenizer
    template = MATH_PLAN_PROMPT  # the harness's MATH planner prompt (harness.core.prompts)
    by_length = sorted(tasks, key=lambda t: len(mc.prompt_ids(tok, template, t[1])))
    subset = by_length[::args.naive_every]
    halves = (subset[0::2], subset[1::2])
    dec = Decoding(greedy=True, max_new_tokens=args.max_new_tokens)
    print(f"sender {args.sender}, greedy, max_new_tokens {args.max_new_tokens}, torch threads "
          f"{torch.get_num_threads()}; batched: {len(tasks)} MATH-500 tasks, batches of {args.batch_size}; "
          f"naive and batch 1: {len(subset)} of them (one in {args.naive_every} by prompt length)")

    def config(dtype: str, batch_size: int) -> mc.CollectConfig:
        return mc.CollectConfig(sender_model=args.sender, dtype=dtype, prompt_template=template, decoding=dec,
                                batch_size=batch_size)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for d, model in loaded.items():  # warm up kernels and allocator once per dtype (not timed)
            mc.collect_messages(mc.CollectConfig(sender_model=args.sender, dtype=d, prompt_template=template,
                                                 decoding=Decoding(max_new_tokens=4), batch_size=2),
                                tasks[:2], out_root=tmp / f"warm-{d}", loaded=model)

        totals: dict[str, list[float]] = {}  # label -> [seconds, tokens]

        def add(label: str, secs: float, toks: int) -> None:
            totals.setdefault(label, [0.0, 0])
            totals[label][0] += secs
            totals[label][1] += toks

        naive_rows: dict[str, list] = {}
        ours_b1: dict = {}
        naive_halves = []

        def one_at_a_time(half: list, name: str) -> None:
            secs, toks, rows = naive_collect(loaded["float32"], half, template, args.max_new_tokens)
            add("naive", secs, toks)
            naive_halves.append(toks / secs)
            naive_rows.update({tid: r for (tid, _), r in zip(half, rows, strict=True)})
            secs, toks, path = ours_collect(loaded["float32"], half, config("float32", 1), tmp / f"b1-{name}")
            add("ours, batch 1, float32", secs, toks)
            ours_b1.update(mc.load_messages(path))

        one_at_a_time(halves[0], "first")
        batched: dict[str, dict] = {}
        ours_file = None
        batched_label = {d: f"ours, batch {args.batch_size}, {d}" for d in dtypes}
        for d in dtypes:
            secs, toks, path = ours_collect(loaded[d], tasks, config(d, args.batch_size), tmp / f"batched-{d}")
            add(batched_label[d], secs, toks)
            batched[d] = mc.load_messages(path)
            if d == "float32":
                ours_file = path / mc.DATASET_DIR / mc.DATA_FILE
        one_at_a_time(halves[1], "second")

        print()
        print(f"{'collection':<28}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}{'vs naive':>10}")
        naive_tps = totals["naive"][1] / totals["naive"][0]
        for label, (secs, toks) in totals.items():
            name = "naive HF generate b1" if label == "naive" else label
            print(f"{name:<28}{toks:>8}{secs:>10.1f}{toks / secs:>10.1f}{toks / secs / naive_tps:>9.2f}x")
        print(f"(naive: {naive_halves[0]:.1f} tokens/s in the half before the batched runs, "
              f"{naive_halves[1]:.1f} after; load average {os.getloadavg()[0]:.1f})")

        # Same greedy plans and states as the naive pipeline (sanity, not a timing).
        pairs = [(naive_rows[tid], ours_b1[tid]) for tid, _ in subset]
        same_len = sum(len(rows) == m.rows for rows, m in pairs)
        worst = max((float((torch.tensor(rows) - m.latents).abs().max()) for rows, m in pairs
                     if len(rows) == m.rows), default=float("nan"))
        print(f"naive vs ours at batch 1: {same_len}/{len(subset)} plans of equal length; max |diff| of "
              f"their rows {worst:.3g} (fp16 storage)")
        print(f"ours batched vs ours at batch 1, float32: "
              f"{agreement(ours_b1, {t: batched['float32'][t] for t in ours_b1})}")
        for d in dtypes:
            if d != "float32":
                print(f"ours batched, {d} vs float32: {agreement(batched['float32'], batched[d])}")

        roof = roofline(loaded["float32"].model)
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        bf16_flags = [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()]
        rate = {d: totals[batched_label[d]][1] / totals[batched_label[d]][0] for d in dtypes}
        print(f"roofline ({roof['params'] / 1e6:.0f}M non-embedding parameters, 2 FLOPs each per token, at this "
              f"machine's matmul peak): float32 {roof['float32']:,.0f} tokens/s, bfloat16 {roof['bfloat16']:,.0f} "
              f"tokens/s (CPU bf16 flags: {', '.join(bf16_flags) or 'none'}); batched collection: "
              + ", ".join(f"{d} {rate[d] / roof[d]:.1%} of its roofline" for d in dtypes if d in roof))

        storage_report(subset, [naive_rows[tid] for tid, _ in subset], ours_file,
                       loaded["float32"].hidden_size, tmp)


if __name__ == "__main__":
    main()
