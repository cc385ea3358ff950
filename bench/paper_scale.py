"""Time and memory at paper scale without the weights: the harness's own paths on a shape model
(``harness.core.shapes``: a published architecture, random weights, fixed-length generation),
absolute times and ratios in one run, peak memory per stage.

GPU, one call (about 5 minutes on one H100):
    python bench/paper_scale.py --shape shape:qwen2.5-7b --dtype bfloat16 --train-shape shape:qwen2.5-0.5b \
        --also-train shape:qwen2.5-7b --out paper_scale.json
CPU (a 4-layer Qwen2 shape at width 256; under 3 minutes on 2 cores): python bench/paper_scale.py

Stages (every time as waited for, CUDA synchronised):
1. collection, generated plan tokens/s: naive HF ``generate`` at batch 1 keeping every layer's
   states (what the public collectors do) against ``collect_messages`` at batch 16 and 64;
2. communication per task at batch 1: the full latents of a 128-token plan (``collect_messages``)
   against K = 8 latent steps with the initial head and with a student's head (``send_latent_steps``;
   a trained head is a LatentStepHead of other values: the same loop at the same cost). The paper:
   9.19 s, 0.39 s and 0.20 s on Qwen2.5-7B;
3. the receiver (``ReceiverAgent``, no message, fixed 24-token replies to ALFWorld-length
   observations): turn time at turns 10, 20 and 40, KV-cached against re-encoding the history
   (one episode each, played side by side, each turn timed on one path then the other);
   and one reply token of ``respond_together`` for 1, 4 and 16 games in lockstep;
4. training: one full fine-tuning step (AdamW, fp32 weights, bf16 autocast on a GPU, causal LM
   loss, 4 x 512 tokens; not the harness trainer, whose step this bounds) at ``--train-shape`` and
   each ``--also-train``, its forward-backward and its optimizer update timed apart; a shape that
   does not fit says so.
Stored: the per-token costs of this device (``harness.estimate.Costs``) in the cache's costs/
folder, which ``interlat-bench run ... --dry-run --estimate`` reads.
Peak memory: CUDA's max_memory_allocated per stage; on a CPU the process's peak resident set
(VmHWM, reset before each stage through /proc/self/clear_refs where Linux allows it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

from interlat_bench.benchmarks.base import Sample
from interlat_bench.collectors import messages as mc
from interlat_bench.collectors.latent_steps import LatentStepHead, send_latent_steps
from interlat_bench.harness import estimate
from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.generation import Decoding
from interlat_bench.harness.core.message import NO_MESSAGE
from interlat_bench.harness.core.models import device, load
from interlat_bench.harness.core.prompts import ALFWORLD_PLAN_PROMPT
from interlat_bench.methods.agents import ReceiverAgent

SMALL = {"model_type": "qwen2", "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 49152, "tie_word_embeddings": True}
# What the small CPU shape runs (a GPU at paper scale takes the argument defaults).
SMALL_RUN = {"naive_tasks": 2, "batched_tasks": 32, "turns": "5,10,20", "train_length": 256}
OBJECTS = ("apple", "mug", "soapbar", "pencil", "cd", "plate", "knife", "book")
PLACES = ("countertop", "shelf", "drawer", "fridge", "sinkbasin", "desk", "cabinet", "diningtable")
OBSERVATION = ("Observation: You arrive at {place} {i}. On the {place} {i}, you see a {obj} 1, a {obj} 2, "
               "a spatula 1, a saltshaker 2 and a peppershaker 3.")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def tasks(n: int) -> list[tuple[str, str]]:
    """ALFWorld-like tasks of varied lengths (the prompt lengths a batch pads over)."""
    return [(f"task-{i}", f"put a clean {OBJECTS[i % 8]} in {PLACES[i // 8 % 8]} "
             f"{i % 5 + 1}" + ", then look around" * (i % 3)) for i in range(n)]


@contextmanager
def peak(report: dict, name: str):
    """Time and peak memory of the block, into ``report[name]``."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        with suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
    sync()
    t0 = time.perf_counter()
    entry = report.setdefault(name, {})
    yield entry
    sync()
    entry["stage_s"] = round(time.perf_counter() - t0, 3)
    if torch.cuda.is_available():
        entry["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        status = Path("/proc/self/status").read_text() if Path("/proc/self/status").exists() else ""
        hwm = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")]
        entry["peak_rss_gib"] = round(hwm[0] / 2**20, 2) if hwm else None


def timed(fn) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def collection(lm, ref: str, dtype: str, plan_tokens: int, n_naive: int, n_batched: int, entry: dict) -> None:
    work = tasks(max(n_naive, n_batched))
    tok, model = lm.tokenizer, lm.model

    def naive():
        for _, text in work[:n_naive]:
            ids = torch.tensor([mc.prompt_ids(tok, ALFWORLD_PLAN_PROMPT, text)], device=model.device)
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=plan_tokens,
                                 min_new_tokens=plan_tokens, do_sample=False, output_hidden_states=True,
                                 return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
            [step[-1][0, -1].float().tolist() for step in out.hidden_states]  # kept as lists, as they do

    entry["naive batch 1 tokens/s"] = round(n_naive * plan_tokens / timed(naive), 1)
    for batch in (16, 64):
        cfg = mc.CollectConfig(sender_model=ref, dtype=dtype, prompt_template=ALFWORLD_PLAN_PROMPT,
                               decoding=Decoding(greedy=True, max_new_tokens=plan_tokens), batch_size=batch)
        with tempfile.TemporaryDirectory() as tmp:
            seconds = timed(lambda: mc.collect_messages(cfg, work[:n_batched], out_root=tmp, loaded=lm))  # noqa: B023
        entry[f"collector batch {batch} tokens/s"] = round(n_batched * plan_tokens / seconds, 1)
    base = entry["naive batch 1 tokens/s"]
    entry["ratios to naive"] = {k: round(v / base, 1) for k, v in entry.items() if k.startswith("collector")}


def communication(lm, ref: str, dtype: str, plan_tokens: int, k: int, n: int, entry: dict) -> None:
    work = tasks(n)
    cfg = mc.CollectConfig(sender_model=ref, dtype=dtype, prompt_template=ALFWORLD_PLAN_PROMPT,
                           decoding=Decoding(greedy=True, max_new_tokens=plan_tokens), batch_size=1)
    full = []
    for task in work:
        with tempfile.TemporaryDirectory() as tmp:
            full.append(timed(lambda: mc.collect_messages(cfg, [task], out_root=tmp, loaded=lm)))  # noqa: B023
    # Built once, as a run builds them once for all its tasks: the initial head (from the
    # embeddings), and a student's (a trained head: other values, the same loop and cost).
    heads = {"untrained": LatentStepHead.initial(lm.model.get_input_embeddings()),
             "student": LatentStepHead(lm.hidden_size).to(lm.model.device)}
    steps = {name: [timed(lambda: send_latent_steps(lm.model, lm.tokenizer, [task], k, head=head))  # noqa: B023
                    for task in work] for name, head in heads.items()}
    entry[f"full latents ({plan_tokens} tokens) s/task"] = round(statistics.median(full), 4)
    for name, times in steps.items():
        entry[f"K={k} {name} s/task"] = round(statistics.median(times), 4)
        entry[f"full / K={k} {name}"] = round(statistics.median(full) / statistics.median(times), 1)


def receiver_turns(lm, turns: tuple[int, ...], reply_tokens: int, lockstep: tuple[int, ...], entry: dict) -> None:
    dec = Decoding(greedy=True, max_new_tokens=reply_tokens)
    sample = Sample("episode", "put a clean mug in coffeemachine", {})
    prompt = "You are an agent in a simulated household. " * 12 + "Your task is to: put a clean mug in coffeemachine."

    def observation(i: int) -> str:
        return OBSERVATION.format(place=PLACES[i % 8], i=i % 4 + 1, obj=OBJECTS[i % 8])

    # The two paths play the same turns side by side, each turn timed on one then the other, so
    # that drifting machine load weighs on both alike.
    paths = {"cached": ReceiverAgent(lm, dec), "re-encoded": ReceiverAgent(lm, dec, reencode=True)}
    times: dict[str, dict[int, float]] = {name: {} for name in paths}
    for agent in paths.values():
        agent.begin(prompt, NO_MESSAGE, sample)
        agent.respond()
    for t in range(1, max(turns) + 1):
        for name, agent in paths.items():
            seconds = timed(lambda: agent.respond(observation(t)))  # noqa: B023
            if t in turns:
                times[name][t] = seconds
    for name in paths:
        entry[f"turn s, {name}"] = {t: round(s, 4) for t, s in times[name].items()}
    entry["re-encoded / cached"] = {t: round(entry["turn s, re-encoded"][t] / entry["turn s, cached"][t], 1)
                                    for t in turns}
    for games in lockstep:
        agents = [ReceiverAgent(lm, dec) for _ in range(games)]
        for i, agent in enumerate(agents):
            agent.begin(prompt, NO_MESSAGE, Sample(f"episode-{i}", sample.task, {}))
        ReceiverAgent.respond_together(agents, [None] * games)
        per_turn = [timed(lambda: ReceiverAgent.respond_together(agents, [observation(t)] * games))  # noqa: B023
                    for t in range(1, 4)]
        per_token = 1000 * statistics.median(per_turn) / reply_tokens
        entry[f"lockstep {games} games: ms per reply token"] = round(per_token, 2)
        entry[f"lockstep {games} games: ms per reply token per game"] = round(per_token / games, 2)


def training_step(ref: str, batch: int, length: int, entry: dict) -> None:
    """One AdamW step of full fine-tuning (fp32 weights; bf16 autocast on a GPU), median of 3."""
    try:
        lm = load(ref, "float32")
        model = lm.model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        ids = torch.randint(0, len(lm.tokenizer), (batch, length), device=model.device)
        cuda = torch.cuda.is_available()

        def forward_backward():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()

        def optimizer_step():
            opt.step()
            opt.zero_grad(set_to_none=True)

        # Timed apart: a step's cost is its tokens' plus the optimizer's, which does not depend
        # on how many tokens the batch held (short conversations make it most of a step).
        times = [(timed(forward_backward), timed(optimizer_step)) for _ in range(3)]
        passes, updates = (statistics.median(t[i] for t in times) for i in (0, 1))
        entry["step s"] = round(passes + updates, 3)
        entry["tokens/s"] = round(batch * length / (passes + updates), 1)
        entry["forward-backward tokens/s"] = round(batch * length / passes, 1)
        entry["optimizer step s"] = round(updates, 4)
        entry["parameters"] = sum(p.numel() for p in model.parameters())
        entry["parameters (B)"] = round(entry["parameters"] / 1e9, 3)
    except torch.cuda.OutOfMemoryError as exc:
        entry["does not fit"] = f"out of memory on one GPU: {str(exc).splitlines()[0][:160]}"
    finally:  # the weights and optimizer state go with this frame; hand their memory back
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default=None, help="model reference (default: the small CPU shape)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--train-shape", default=None, help="the receiver trained in full (default: --shape)")
    ap.add_argument("--also-train", action="append", default=[], help="another shape to try a training step on")
    ap.add_argument("--plan-tokens", type=int, default=128)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--naive-tasks", type=int, default=None, help="default 4 (2 on the small shape)")
    ap.add_argument("--batched-tasks", type=int, default=None, help="default 64 (32 on the small shape)")
    ap.add_argument("--comm-tasks", type=int, default=3)
    ap.add_argument("--turns", default=None, help="default 10,20,40 (5,10,20 on the small shape)")
    ap.add_argument("--reply-tokens", type=int, default=24)
    ap.add_argument("--lockstep", default="1,4,16")
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--train-length", type=int, default=None, help="default 512 (256 on the small shape)")
    ap.add_argument("--out", type=Path, default=None, help="write the report as JSON here too")
    ap.add_argument("--no-store-costs", dest="store_costs", action="store_false",
                    help="do not store this device's per-token costs (what `run --estimate` reads)")
    args = ap.parse_args()
    paper = {"naive_tasks": 4, "batched_tasks": 64, "turns": "10,20,40", "train_length": 512}
    for name, value in (paper if args.shape else SMALL_RUN).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    with tempfile.TemporaryDirectory() as tmp:
        if args.shape is None:
            (Path(tmp) / "config.json").write_text(json.dumps(SMALL))
        shape = args.shape or f"shape:{Path(tmp) / 'config.json'}"
        where = estimate.this_device()
        report: dict = {"shape": args.shape or f"small CPU shape {SMALL}", "dtype": args.dtype, "device": where,
                        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        with peak(report, "load") as entry:
            lm = load(shape, args.dtype)
            entry["parameters"] = sum(p.numel() for p in lm.model.parameters())
            entry["parameters (B)"] = round(entry["parameters"] / 1e9, 3)
        with peak(report, "collection") as entry:
            collection(lm, shape, args.dtype, args.plan_tokens, args.naive_tasks, args.batched_tasks, entry)
        with peak(report, "communication") as entry:
            communication(lm, shape, args.dtype, args.plan_tokens, args.k, args.comm_tasks, entry)
        with peak(report, "receiver") as entry:
            receiver_turns(lm, tuple(int(t) for t in args.turns.split(",")), args.reply_tokens,
                           tuple(int(g) for g in args.lockstep.split(",")), entry)
        del lm
        for ref in [args.train_shape or shape, *args.also_train]:
            with peak(report, f"training step {ref if ref != shape or args.shape else 'small shape'}") as entry:
                training_step(ref, args.train_batch, args.train_length, entry)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    print(f"device {device()}; every time as waited for; ratios from this one run")
    if args.store_costs:
        first_training = next(k for k in report if k.startswith("training step"))
        try:
            path = estimate.store(estimate.Costs.from_report(report, first_training))
            print(f"per-token costs of {report['device']} stored in {path}: `interlat-bench run ... --estimate` "
                  "reads them")
        except UserError as exc:
            print(f"per-token costs not stored: {exc}")


if __name__ == "__main__":
    main()
