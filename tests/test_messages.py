"""Latent message collection: alignment with a teacher-forced pass, caching, resume, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from interlat_bench.collectors import messages as mc
from interlat_bench.harness.core.generation import Decoding

TASKS = [
    ("t0", "put a clean mug in the coffee machine"),
    ("t1", "heat some egg and put it in the fridge, then look at the bowl under the desk lamp"),
    ("t2", "cool a tomato"),
    ("t3", "find two pencils and put them in the drawer next to the bed in the bedroom upstairs"),
    ("t4", "examine the book with the desklamp"),
    ("t5", "put a washed spatula on the dining table"),
]

# Tiny random models copy their last input token forever under greedy decoding, so several
# checks sample (per-task seeded generators) to get varied plans.
SAMPLE = Decoding(greedy=False, temperature=1.0, top_p=0.95, top_k=200, max_new_tokens=6)
GREEDY = Decoding(max_new_tokens=6)


@pytest.fixture(scope="module")
def tiny():
    from interlat_bench.harness.core.models import load

    return load("tiny-llama", "float32")


class Spy:
    """Wraps a function: records (args, kwargs, result) and can fail on a chosen call."""

    def __init__(self, real, fail_on: int | None = None):
        self.real, self.fail_on, self.calls = real, fail_on, []

    def __call__(self, *args, **kw):
        if self.fail_on is not None and len(self.calls) + 1 == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        out = self.real(*args, **kw)
        self.calls.append((args, kw, out))
        return out


def spy_batches(monkeypatch):
    """Spies on the collector's batches and on ``generate`` (one call per batch)."""
    batches, gens = Spy(mc._generate_batch), Spy(mc.generate)
    monkeypatch.setattr(mc, "_generate_batch", batches)
    monkeypatch.setattr(mc, "generate", gens)
    return batches, gens


def teacher_forced(model, prompt: list[int], plan: tuple[int, ...]) -> torch.Tensor:
    """Last-layer states after the final norm at positions [last prompt, y_1..y_{L-1}]."""
    ids = torch.tensor([list(prompt) + list(plan)], device=next(model.parameters()).device)
    with torch.no_grad():
        h = model.get_decoder()(input_ids=ids).last_hidden_state[0]
    return h[len(prompt) - 1:len(prompt) - 1 + len(plan)].float().cpu()


def check_alignment(loaded, cfg, tasks, msgs, spies, stored_rtol, live_atol):
    batches, gens = spies
    assert len(batches.calls) == len(gens.calls)
    prompts = {tid: mc.prompt_ids(loaded.tokenizer, cfg.prompt_template, text) for tid, text in tasks}
    live = {}  # in-loop states, before fp16 storage
    for (args, _, _), (_, _, out) in zip(batches.calls, gens.calls):
        for row, (tid, _) in enumerate(args[2]):
            live[tid] = (out.token_ids[row], out.hidden[row])
    for tid, _ in tasks:
        msg = msgs[tid]
        ref = teacher_forced(loaded.model, prompts[tid], msg.token_ids)
        assert msg.latents.shape == ref.shape == (msg.rows, loaded.hidden_size)
        assert msg.latents.dtype == torch.float32
        toks, hidden = live[tid]
        assert tuple(toks[:msg.rows]) == msg.token_ids
        # KV-cached, left-padded decoding vs one full pass: fp32 reordering noise only.
        torch.testing.assert_close(hidden.float().cpu(), ref, rtol=1e-4, atol=live_atol)
        # Stored values are fp16: relative rounding <= 2^-11 (~4.9e-4) per element, plus the
        # fp32 noise above; so rtol 2e-3 with a small atol for elements near zero.
        torch.testing.assert_close(msg.latents, ref, rtol=stored_rtol, atol=live_atol + 1e-3)


def test_prompt_is_chat_template_single_user_turn(tiny):
    tok = tiny.tokenizer
    text = mc.ALFWORLD_PLAN_PROMPT.format(task="cool a tomato")
    expect = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                     tokenize=True, return_dict=True)["input_ids"]
    assert mc.prompt_ids(tok, mc.ALFWORLD_PLAN_PROMPT, "cool a tomato") == list(expect)
    assert "{task}" in mc.MATH_PLAN_PROMPT


@pytest.mark.parametrize("sample", [True, False], ids=["sampled", "greedy"])
@pytest.mark.parametrize("task", ["math", "alfworld"])
def test_cli_prompt_collects_what_the_harness_collects(task, sample, tmp_path, monkeypatch):
    """``--prompt math|alfworld`` and a run's collection share one prompt and one paper
    temperature (harness.core.prompts), so they land under one cache key."""
    from interlat_bench.benchmarks.alfworld import AlfworldBenchmark
    from interlat_bench.benchmarks.base import Sample
    from interlat_bench.benchmarks.math import MathBenchmark
    from interlat_bench.collectors.plans import collect_plans
    from interlat_bench.methods.sending import SENDER_DEFAULTS, plan_collection

    seen = []

    def fake_collect(cfg, tasks, out_root=None, progress=None, **kw):
        seen.append((cfg, list(tasks)))
        return tmp_path

    monkeypatch.setattr(mc, "collect_messages", fake_collect)
    monkeypatch.setattr(mc, "load_messages", lambda path: {})
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("".join(json.dumps({"task_id": i, "task": t}) + "\n" for i, t in TASKS[:3]))
    mc.main(["--sender", "tiny-llama", "--tasks-file", str(tasks_file), "--prompt", task,
             "--max-new-tokens", str(SENDER_DEFAULTS["plan_tokens"])] + (["--sample"] if sample else []))
    bench = {"math": MathBenchmark, "alfworld": AlfworldBenchmark}[task]()
    stage = plan_collection({**SENDER_DEFAULTS, "plan_greedy": not sample}, bench, sender_model="tiny-llama",
                            dtype="float32", seed=0)
    collect_plans(stage, bench.sender_tasks([Sample(i, t) for i, t in TASKS[:3]]))
    (cli, cli_tasks), (harness, harness_tasks) = seen
    assert cli.prompt_template == harness.prompt_template == bench.planner_prompt
    assert cli.decoding == harness.decoding
    assert cli.decoding.temperature == bench.plan_temperature == {"math": 0.8, "alfworld": 0.7}[task]
    assert mc.content_key(cli, cli_tasks) == mc.content_key(harness, harness_tasks)


@pytest.mark.parametrize(("dec", "share"), [(GREEDY, True), (SAMPLE, True), (SAMPLE, False)],
                         ids=["greedy", "sampled-early-eos", "sampled-plain-prefill"])
def test_alignment_tiny_left_padded(tiny, tmp_path, monkeypatch, dec, share):
    tasks = TASKS[:4]
    monkeypatch.setattr(mc, "SHARE_PREFILL", share)
    spies = spy_batches(monkeypatch)
    if not dec.greedy:
        # Many "EOS" ids so rows stop at different steps and finished rows ride along.
        monkeypatch.setattr(type(tiny), "stop_ids", property(lambda lm: set(range(0, len(lm.tokenizer), 5))))
    cfg = mc.CollectConfig(sender_model="tiny-llama", decoding=dec, seed=3, batch_size=4)
    msgs = mc.load_messages(mc.collect_messages(cfg, tasks, out_root=tmp_path, loaded=tiny))
    assert list(msgs) == [tid for tid, _ in tasks]
    (args, _, _), = spies[0].calls  # one batch ...
    assert (args[-1] is not None) == share  # ... with the shared prompt prefix computed once
    assert spies[1].calls[0][1]["attention_mask"].eq(0).any()  # ... left padded
    lengths = {len(mc.prompt_ids(tiny.tokenizer, cfg.prompt_template, t)) for _, t in tasks}
    assert len(lengths) == len(tasks)
    if not dec.greedy:
        rows = [m.rows for m in msgs.values()]
        assert min(rows) < max(rows)
    check_alignment(tiny, cfg, tasks, msgs, spies, stored_rtol=2e-3, live_atol=1e-5)


def test_prefill_groups_are_length_sorted_within_budget():
    groups = mc._prefill_groups([3, 10, 4, 9, 2, 12], budget=23)
    assert groups == [[5], [1, 3], [2, 0, 4]]  # 12 alone (2 x 12 > 23); 10 + 9 (2 x 10); 4, 3, 2
    assert mc._prefill_groups([50, 7], budget=23) == [[0], [1]]  # a row past the budget still goes


def test_alignment_tiny_prefill_in_groups(tiny, tmp_path, monkeypatch):
    """Prompts prefilled in several groups of different widths, then decoded as one batch,
    give each task the states of a teacher-forced pass over its own prompt and plan."""
    tasks = TASKS
    cfg = mc.CollectConfig(sender_model="tiny-llama", decoding=SAMPLE, seed=5, batch_size=len(tasks))
    prompts = [mc.prompt_ids(tiny.tokenizer, cfg.prompt_template, t) for _, t in tasks]
    shared = next(i for i in range(len(prompts[0])) if len({p[i] for p in prompts}) > 1)
    own = [len(p) - shared - 1 for p in prompts]  # prefilled after the shared prefix
    # Budget: the longest prompt's own part alone, then pairs or more of the shorter ones.
    monkeypatch.setattr(mc, "PREFILL_GROUP_TOKENS", 2 * max(own) - 1)
    grouping = Spy(mc._prefill_groups)
    monkeypatch.setattr(mc, "_prefill_groups", grouping)
    spies = spy_batches(monkeypatch)
    msgs = mc.load_messages(mc.collect_messages(cfg, tasks, out_root=tmp_path, loaded=tiny))
    assert len(spies[0].calls) == 1 and len(grouping.calls) == 1
    (lengths, _), _, groups = grouping.calls[0]
    assert sorted(lengths) == sorted(own) and len(set(own)) > 2
    assert 2 < len(groups) < len(tasks)
    check_alignment(tiny, cfg, tasks, msgs, spies, stored_rtol=2e-3, live_atol=1e-5)


@pytest.mark.slow
def test_alignment_smollm2(tmp_path, monkeypatch):
    from interlat_bench.harness.core.models import load

    loaded = load("smollm2-135m", "float32")
    tasks = [("m0", "What is $1+2+\\cdots+10$?"),
             ("m1", "Find all real $x$ such that $x^2 - 5x + 6 = 0$, and give their sum."),
             ("m2", "How many positive divisors does 36 have?")]
    spies = spy_batches(monkeypatch)
    cfg = mc.CollectConfig(sender_model="smollm2-135m", prompt_template=mc.MATH_PLAN_PROMPT,
                           decoding=Decoding(max_new_tokens=16), batch_size=3)
    msgs = mc.load_messages(mc.collect_messages(cfg, tasks, out_root=tmp_path, loaded=loaded))
    assert all(m.rows > 0 and m.latents.shape[1] == 576 for m in msgs.values())
    # States have norm ~47 and elements up to ~50: fp32 reordering noise measured ~3e-5 absolute.
    check_alignment(loaded, cfg, tasks, msgs, spies, stored_rtol=2e-3, live_atol=5e-4)


def test_stored_format(tiny, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features

    cfg = mc.CollectConfig(sender_model="tiny-llama", decoding=SAMPLE, batch_size=2)
    path = mc.collect_messages(cfg, TASKS[:3], out_root=tmp_path, loaded=tiny)
    assert path.parent == tmp_path and len(path.name) == 16 and mc.is_done(path)
    assert not (path / mc.PARTS_DIR).exists()
    table = pq.read_table(path / mc.DATASET_DIR / mc.DATA_FILE)
    assert table.column_names == list(mc.COLUMNS)
    assert table.schema.field("latents").type == pa.list_(pa.float16())
    features = Features.from_arrow_schema(table.schema)  # loads back as the same HF dataset
    assert features["latents"].feature.dtype == "float16"
    row = table.slice(0, 1).to_pylist()[0]
    assert len(row["latents"]) == row["rows"] * row["dim"] and row["rows"] == len(row["plan_token_ids"])
    gen = json.loads(row["generation"])
    assert gen["decoding"]["temperature"] == 1.0 and gen["seed"] == 0
    msg = mc.load_messages(path)[TASKS[0][0]]
    assert msg.kind == "latent" and msg.text == tiny.tokenizer.decode(list(msg.token_ids),
                                                                     skip_special_tokens=True)


def test_keep_rows_is_the_front_of_the_full_message(tiny, tmp_path):
    full_cfg = mc.CollectConfig(sender_model="tiny-llama", decoding=SAMPLE, batch_size=3)
    short_cfg = mc.CollectConfig(sender_model="tiny-llama", decoding=SAMPLE, batch_size=3, keep_rows=3)
    full = mc.load_messages(mc.collect_messages(full_cfg, TASKS[:3], out_root=tmp_path, loaded=tiny))
    short_path = mc.collect_messages(short_cfg, TASKS[:3], out_root=tmp_path, loaded=tiny)
    assert short_path != mc.collection_path(full_cfg, TASKS[:3], tmp_path)
    for tid, msg in mc.load_messages(short_path).items():
        assert msg.rows == 3 and msg.token_ids == full[tid].token_ids[:3]
        torch.testing.assert_close(msg.latents, full[tid].latents[:3], rtol=0, atol=0)


def test_batch_size_is_in_the_key_below_fp32_only():
    def key(dtype: str, batch_size: int) -> str:
        cfg = mc.CollectConfig(sender_model="tiny-llama", dtype=dtype, decoding=GREEDY, batch_size=batch_size)
        return mc.content_key(cfg, TASKS)

    assert key("float32", 32) == key("float32", 64)  # batching leaves fp32 plans as they are
    assert key("bfloat16", 32) != key("bfloat16", 64) != key("float32", 64)
    assert key("bfloat16", 64) == key("bfloat16", 64)


def test_second_call_reuses_without_generating(tiny, tmp_path, monkeypatch):
    cfg = mc.CollectConfig(sender_model="tiny-llama", decoding=SAMPLE, batch_size=2)
    first = mc.collect_messages(cfg, TASKS[:3], out_root=tmp_path, loaded=tiny)

    def boom(*a, **k):
        raise AssertionError("must not generate or load a model")

    monkeypatch.setattr(mc, "generate", boom)
    monkeypatch.setattr("interlat_bench.harness.core.models.load", boom)
    other_batch = mc.CollectConfig(sender_model="tiny-llama", decoding=SAMPLE, batch_size=5)
    assert mc.collect_messages(other_batch, TASKS[:3], out_root=tmp_path) == first
    # Anything that changes content gets its own folder.
    assert mc.collection_path(mc.CollectConfig(sender_model="tiny-llama", decoding=SAMPLE, seed=1),
                              TASKS[:3], tmp_path) != first
    assert mc.collection_path(cfg, TASKS[:2], tmp_path) != first
    # Greedy output does not depend on the seed or on the sampling knobs.
    g1 = mc.CollectConfig(sender_model="tiny-llama", decoding=GREEDY, seed=1)
    g2 = mc.CollectConfig(sender_model="tiny-llama", decoding=Decoding(max_new_tokens=6, temperature=0.3))
    assert mc.collection_path(g1, TASKS, tmp_path) == mc.collection_path(g2, TASKS, tmp_path)


def test_resume_after_interruption(tiny, tmp_path, monkeypatch):
    tasks = TASKS[:4]
    cfg = mc.CollectConfig(sender_model="tiny-llama", decoding=SAMPLE, batch_size=2)
    crash = Spy(mc.generate, fail_on=2)
    monkeypatch.setattr(mc, "generate", crash)
    with pytest.raises(KeyboardInterrupt):
        mc.collect_messages(cfg, tasks, out_root=tmp_path / "a", loaded=tiny)
    folder = mc.collection_path(cfg, tasks, tmp_path / "a")
    parts = list((folder / mc.PARTS_DIR).iterdir())
    assert len(parts) == 1 and not mc.is_done(folder)  # one finished batch, no temp leftovers
    done_before = mc._done_ids(folder)
    assert len(done_before) == 2

    resume = Spy(crash.real)
    monkeypatch.setattr(mc, "generate", resume)
    assert mc.collect_messages(cfg, tasks, out_root=tmp_path / "a", loaded=tiny) == folder
    generated = sum(kw["input_ids"].shape[0] for _, kw, _ in resume.calls)
    assert generated == len(tasks) - len(done_before)

    monkeypatch.setattr(mc, "generate", crash.real)
    resumed = mc.load_messages(folder)
    straight = mc.load_messages(mc.collect_messages(cfg, tasks, out_root=tmp_path / "b", loaded=tiny))
    assert list(resumed) == list(straight) == [tid for tid, _ in tasks]
    for tid in straight:
        assert resumed[tid].token_ids == straight[tid].token_ids
        torch.testing.assert_close(resumed[tid].latents, straight[tid].latents, rtol=2e-3, atol=1e-4)


def test_torchrun_two_processes_match_one(tiny, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this python")
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("".join(json.dumps({"task_id": i, "task": t}) + "\n" for i, t in TASKS))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m",
           "interlat_bench.collectors.messages", "--sender", "tiny-llama",
           "--tasks-file", str(tasks_file), "--sample", "--temperature", "1.0", "--top-p", "0.95",
           "--top-k", "200", "--max-new-tokens", "6", "--batch-size", "2",
           "--out-root", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[rank 0]" in proc.stderr and "[rank 1]" in proc.stderr  # both ranks did work
    two_path = Path(proc.stdout.strip().splitlines()[-1])

    cfg = mc.CollectConfig(sender_model="tiny-llama", decoding=SAMPLE, batch_size=3)  # batch size: not in key
    one_path = mc.collect_messages(cfg, TASKS, out_root=tmp_path / "one", loaded=tiny)
    assert one_path.name == two_path.name
    one, two = mc.load_messages(one_path), mc.load_messages(two_path)
    assert list(one) == list(two) == [tid for tid, _ in TASKS]
    for tid in one:
        assert one[tid].token_ids == two[tid].token_ids
        torch.testing.assert_close(one[tid].latents, two[tid].latents, rtol=2e-3, atol=1e-4)
    shutil.rmtree(tmp_path / "two", ignore_errors=True)


def test_a_concurrent_writer_keeps_its_parts_until_it_leaves(tiny, tmp_path):
    """Two runs sharing a cache: the one that merges first must not delete parts/ while the
    other is still writing there (it used to crash with FileNotFoundError on parts/.tmp-...)."""
    import fcntl

    cfg = mc.CollectConfig(sender_model="tiny-llama", decoding=SAMPLE, batch_size=2)
    folder = mc.collection_path(cfg, [(str(i), str(t)) for i, t in TASKS[:3]], tmp_path)
    folder.mkdir(parents=True)
    with open(folder / ".writers.lock", "a+") as other:  # a second run, mid-collection
        fcntl.flock(other, fcntl.LOCK_SH)
        path = mc.collect_messages(cfg, TASKS[:3], out_root=tmp_path, loaded=tiny)
        assert mc.is_done(path) and (path / mc.PARTS_DIR).is_dir()  # left for the other writer
        with mc._writing(path):  # the other run writes its last part now, after the merge
            mc._write_table(mc._read_table(path / mc.DATASET_DIR / mc.DATA_FILE), path / mc.PARTS_DIR / "part-x.parquet")
            mc._merge(path, cfg, [(str(i), str(t)) for i, t in TASKS[:3]])  # finished already: no-op
        fcntl.flock(other, fcntl.LOCK_UN)
    assert (path / mc.PARTS_DIR).is_dir()  # the other run's own lock was still held at that exit
    with mc._writing(path):
        pass
    assert not (path / mc.PARTS_DIR).exists()  # the last writer out cleans up
    assert len(mc.load_messages(path)) == 3
