"""Latent collection speed and storage: naive HF ``generate`` vs ``collect_messages``.

Run: ``MATH_DATA=../shared/data/math python bench/collect_speed.py`` (SmolLM2-135M, CPU ok).

- naive: batch 1, ``model.generate(output_hidden_states=True, return_dict_in_generate=True)``,
  which keeps every layer's state at every step; the last layer is then taken per step and
  kept as fp32 Python lists (the public collectors' format);
- ours: ``collect_messages`` end to end (shared-prefix prefill, generation, capture of the
  last layer only, Parquet parts, merge), at batch 1 and batched.

The three run interleaved, one round of ``--batch-size`` tasks at a time, so that drifting
machine load affects them alike.

Tokens/s counts generated plan tokens (one message row each). The roofline line puts them
next to this machine's ceiling for the model: the fp32 and bf16 matmul peaks measured in the
same run (2048^3 products), divided by 2 FLOPs per non-embedding parameter per token. Storage is bytes per message
row: fp32 lists as JSON text, fp32 lists as Arrow/Parquet list<float32>, and our Parquet file
(whole file, all columns) and its latents column alone.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from interlat_bench.collectors import messages as mc
from interlat_bench.harness.core.generation import Decoding, eos_ids
from interlat_bench.harness.core.models import load
from interlat_bench.harness.core.prompts import MATH_PLAN_PROMPT
from interlat_bench.harness.core.settings import math_dir
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--math-dir", default=None, help="folder with math500_test.jsonl (or MATH_DATA)")
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=SENDER_DEFAULTS["plan_tokens"])
    ap.add_argument("--batch-size", type=int, default=mc.CollectConfig.batch_size)
    ap.add_argument("--sender", default="smollm2-135m")
    args = ap.parse_args()

    tasks = mc.read_tasks(math_dir(args.math_dir) / "math500_test.jsonl")[:args.tasks]
    loaded = load(args.sender, "float32")
    dec = Decoding(greedy=True, max_new_tokens=args.max_new_tokens)
    template = MATH_PLAN_PROMPT  # the harness's MATH planner prompt (harness.core.prompts)
    print(f"sender {args.sender}, {len(tasks)} MATH-500 tasks, greedy, max_new_tokens "
          f"{args.max_new_tokens}, torch threads {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Warm up kernels and allocator once (not timed).
        mc.collect_messages(mc.CollectConfig(sender=args.sender, prompt_template=template,
                                             decoding=Decoding(max_new_tokens=4), batch_size=2),
                            tasks[:2], out_root=tmp / "warm", loaded=loaded)

        # Interleave the three pipelines round by round (one batch of tasks each), so drifting
        # machine load hits them alike.
        b_label = f"ours, batch {args.batch_size}"
        totals = {"naive": [0.0, 0], "ours, batch 1": [0.0, 0], b_label: [0.0, 0]}
        naive_rows: list = []
        ours_b1: dict = {}
        ours_files: list[Path] = []
        for r in range(0, len(tasks), args.batch_size):
            chunk = tasks[r:r + args.batch_size]
            secs, toks, rows = naive_collect(loaded, chunk, template, args.max_new_tokens)
            totals["naive"][0] += secs
            totals["naive"][1] += toks
            naive_rows += rows
            for label, bs in (("ours, batch 1", 1), (b_label, args.batch_size)):
                cfg = mc.CollectConfig(sender=args.sender, prompt_template=template, decoding=dec,
                                       batch_size=bs)
                secs, toks, path = ours_collect(loaded, chunk, cfg, tmp / f"b{bs}-{r}")  # no reuse
                totals[label][0] += secs
                totals[label][1] += toks
                if bs == 1:
                    ours_b1.update(mc.load_messages(path))
                else:
                    ours_files.append(path / mc.DATASET_DIR / mc.DATA_FILE)

        # Same greedy plans and states as the naive pipeline (sanity, not a timing).
        pairs = [(rows, ours_b1[tid]) for (tid, _), rows in zip(tasks, naive_rows, strict=True)]
        same_len = sum(len(rows) == m.rows for rows, m in pairs)
        worst = max((float((torch.tensor(rows) - m.latents).abs().max()) for rows, m in pairs
                     if len(rows) == m.rows), default=float("nan"))

        print()
        print(f"{'collection':<22}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}{'vs naive':>10}")
        naive_tps = totals["naive"][1] / totals["naive"][0]
        for label, (secs, toks) in totals.items():
            name = "naive HF generate b1" if label == "naive" else label
            print(f"{name:<22}{toks:>8}{secs:>10.1f}{toks / secs:>10.1f}{toks / secs / naive_tps:>9.2f}x")
        print(f"(naive vs ours: {same_len}/{len(tasks)} plans of equal length; max |diff| of "
              f"their rows {worst:.3g}, fp16 storage; load average {os.getloadavg()[0]:.1f})")
        best = max(toks / secs for secs, toks in totals.values())
        roof = roofline(loaded.model)
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        print(f"roofline ({roof['params'] / 1e6:.0f}M non-embedding parameters, 2 FLOPs each per token, at this "
              f"machine's matmul peak): fp32 {roof['float32']:,.0f} tokens/s, bf16 {roof['bfloat16']:,.0f} tokens/s "
              f"(CPU bf16 instructions: {'yes' if 'avx512_bf16' in flags or 'amx_bf16' in flags else 'no'}); "
              f"best collection above: {best / roof['float32']:.1%} of the fp32 roofline")

        # Storage, bytes per message row.
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows_total = sum(len(r) for r in naive_rows)
        json_path = tmp / "naive.json"
        json_path.write_text(json.dumps({tid: rows for (tid, _), rows in zip(tasks, naive_rows,
                                                                             strict=True)}))
        flat = [[v for row in rows for v in row] for rows in naive_rows]
        f32 = pa.table({"latents": pa.array(flat, type=pa.list_(pa.float32()))})
        f32_path = tmp / "naive_f32.parquet"
        pq.write_table(f32, f32_path)
        ours_rows = ours_bytes = lat_bytes = 0
        for ours_file in ours_files:
            ours_rows += sum(m.rows for m in mc.load_messages(ours_file).values())
            ours_bytes += os.path.getsize(ours_file)
            meta = pq.read_metadata(ours_file)
            lat_idx = meta.schema.to_arrow_schema().get_field_index("latents")
            lat_bytes += sum(meta.row_group(g).column(lat_idx).total_compressed_size
                             for g in range(meta.num_row_groups))
        ours_file_pr = ours_bytes / ours_rows
        ours_lat_pr = lat_bytes / ours_rows
        baselines = {
            "fp32 lists, JSON": os.path.getsize(json_path) / rows_total,
            "fp32 list<float32>, Arrow in memory": f32.nbytes / rows_total,
            "fp32 list<float32>, Parquet": os.path.getsize(f32_path) / rows_total,
        }
        print()
        print(f"{'storage (bytes per row, dim ' + str(loaded.hidden_size) + ')':<40}{'bytes/row':>10}"
              f"{'ours file':>11}{'ours latents':>14}")
        for label, bpr in baselines.items():
            print(f"{label:<40}{bpr:>10.0f}{ours_file_pr / bpr:>10.2f}x{ours_lat_pr / bpr:>13.2f}x")
        print(f"{'ours: Parquet, whole file (all columns)':<40}{ours_file_pr:>10.0f}")
        print(f"{'ours: latents column (fp16, zstd+BSS)':<40}{ours_lat_pr:>10.0f}")


if __name__ == "__main__":
    main()
