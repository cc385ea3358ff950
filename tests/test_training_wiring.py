"""The train/eval seam of the receiver: supervision mask, labels, slot rows, curriculum, passes.

Tiny random models in-process (no download). Each test pins wiring that a plausible edit could
break without any other test noticing: what is supervised, what fills the slot at training
and at evaluation (one function, ``trainers.slot.slot_rows``), which ratio each optimizer step
trains with, and what the L_plan / L_neg passes put in the slot.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from interlat_bench.benchmarks.math import MathBenchmark
from interlat_bench.harness.core import conversation as conv
from interlat_bench.harness.core import models
from interlat_bench.methods.base import Message
from interlat_bench.trainers.adapter import CommAdapter
from interlat_bench.trainers.checkpoint import load_receiver
from interlat_bench.trainers.config import TrainConfig
from interlat_bench.trainers.curriculum import Curriculum
from interlat_bench.trainers.losses import LossWeights, combine, plan_alignment_loss, separation_loss
from interlat_bench.trainers.receiver import IGNORE, SlotReceiver, build_examples, train_receiver

SENDER_DIM = 64  # tiny-llama's hidden size: the fake sender is tiny-llama
MAX_ROWS = 6     # slot limit of the trained checkpoints below; every message is longer
PLAN = ("First write the equation in standard form, then factor the quadratic, then check "
        "each root against the original condition and keep the valid ones ({i}).")


def fake_messages(samples, seed: int = 0) -> dict[str, Message]:
    """Latent messages keyed by sample id: 10..12 rows (> MAX_ROWS), plans of ~30 tokens."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, s in enumerate(samples):
        rows = 10 + i % 3
        out[s.id] = Message(kind="latent", text=PLAN.format(i=i), token_ids=tuple(range(rows)),
                            latents=torch.randn(rows, SENDER_DIM, generator=g))
    return out


def tiny_receiver():
    lm = models.load("tiny-llama", dtype="float32")
    bop, eop = conv.add_slot_tokens(lm)
    return lm, bop, eop


def quiet(*_args, **_kw):
    pass


@pytest.fixture(scope="module")
def math_train():
    return MathBenchmark().train_samples(limit=8)


@pytest.fixture(scope="module")
def trained(math_train, tmp_path_factory):
    """One latent and one text receiver, trained as the methods train them (tiny, a few steps)."""
    root = tmp_path_factory.mktemp("receivers")
    msgs = fake_messages(math_train)
    # 8 conversations, batches of 2, 2 micro-batches per optimizer step, 2 epochs: 4 steps.
    cfg = TrainConfig(n_train=8, epochs=2.0, batch_size=2, grad_accum=2, max_len=40, max_slot_rows=MAX_ROWS)
    calls: list[tuple[str, float]] = []  # the CE pass's slots: (task id, ratio passed)
    real_slot = SlotReceiver.slot

    def slot(self, ex, latents, ratio):
        if latents is not None and latents is ex.latents:  # the CE pass of a latent batch
            calls.append((ex.task_id, ratio))
        return real_slot(self, ex, latents, ratio)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SlotReceiver, "slot", slot)
        latent = train_receiver("tiny-llama", "latent", math_train, msgs, cfg, log=quiet, out_root=root)
    text_cfg = TrainConfig(n_train=2, batch_size=2, max_len=16, max_slot_rows=MAX_ROWS)
    text = train_receiver("tiny-llama", "text", math_train[:2], msgs, text_cfg, log=quiet, out_root=root)
    return SimpleNamespace(latent=latent, text=text, messages=msgs, cfg=cfg, slot_calls=calls)


# ------------------------------------------------------------------ (a) supervision mask


@pytest.mark.parametrize("system", [True, False], ids=["system-turn", "template-default-system"])
def test_encode_supervises_exactly_the_assistant_turns(system):
    tok = models.load("tiny-llama", dtype="float32").tokenizer
    replies = ["Thought: the mug is in the sink.\nAction: go to sinkbasin 1",
               "Action: take mug 1 from sinkbasin 1", "Done, the answer is \\boxed{4}."]
    msgs = ([{"role": "system", "content": "You are a careful agent."}] if system else []) + [
        {"role": "user", "content": conv.with_slot("Your task is to: clean a mug.", special=True,
                                                   message_kind="latent")},
        {"role": "assistant", "content": replies[0]},
        {"role": "user", "content": "You arrive at sinkbasin 1. On it, you see a mug 1."},
        {"role": "assistant", "content": replies[1]},
        {"role": "user", "content": "You pick up the mug 1."},
        {"role": "assistant", "content": replies[2]},
    ]
    enc = conv.encode(tok, msgs, add_generation_prompt=False)

    # Independent oracle: character spans of each reply plus its <|im_end|> in the rendered
    # conversation; a token is supervised iff it lies inside one of them.
    full = conv.render(tok, msgs, add_generation_prompt=False)
    head, tail = full.split(conv.PLACEHOLDER)
    assert enc.before == conv.tokenize(tok, head)
    assert enc.after == conv.tokenize(tok, tail)
    spans, start = [], 0
    for reply in replies:
        at = tail.index("<|im_start|>assistant\n" + reply + "<|im_end|>", start) + len("<|im_start|>assistant\n")
        spans.append((at, at + len(reply) + len("<|im_end|>")))
        start = spans[-1][1]
    offsets = tok(tail, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    expect = [any(a <= lo and hi <= b for a, b in spans) for lo, hi in offsets]
    assert enc.labels_after == expect

    supervised = [t for t, s in zip(enc.after, enc.labels_after) if s]
    assert supervised == sum((conv.tokenize(tok, r + "<|im_end|>") for r in replies), [])
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert im_start not in supervised  # no turn header, no role names
    assert supervised.count(im_end) == len(replies)  # each turn's end-of-turn token, once
    said = tok.decode(supervised)
    for m in msgs:  # no user/system text
        if m["role"] != "assistant":
            assert m["content"].split(conv.PLACEHOLDER)[0].strip() not in said


# ------------------------------------------------------------------ (b) labels of a sequence


@pytest.mark.parametrize("kind", ["latent", "text", "none"])
def test_sequence_labels_ignore_prefix_bop_slot_eop(kind, math_train):
    lm, bop, eop = tiny_receiver()
    cfg = TrainConfig(max_len=64, max_slot_rows=MAX_ROWS)
    samples = math_train[:2]
    ex = build_examples(lm.tokenizer, samples, fake_messages(samples), kind, cfg)[0]
    torch.manual_seed(0)
    adapter = CommAdapter(SENDER_DIM, lm.hidden_size).to(lm.model.device) if kind == "latent" else None
    module = SlotReceiver(lm.model, adapter, kind, bop, eop, cfg.weights())
    slot = module.slot(ex, ex.latents, 1.0)
    n = 0 if slot is None else slot.shape[0]
    assert n == {"latent": MAX_ROWS, "text": MAX_ROWS, "none": 0}[kind]
    embeds, labels = module._sequence(ex, slot)

    prefix = len(ex.before) + 1 + n + 1  # before, <bop>, slot rows, <eop>
    assert embeds.shape[0] == len(labels) == prefix + len(ex.after)
    assert labels[:prefix] == [IGNORE] * prefix
    assert labels[prefix:] == [t if s else IGNORE for t, s in zip(ex.after, ex.supervised)]
    assert any(s for s in ex.supervised) and not all(ex.supervised)
    # The rows are where the labels say: <bop>/<eop> embeddings around the slot rows.
    emb = lm.model.get_input_embeddings()
    ids = torch.tensor(ex.before + [bop], device=emb.weight.device)
    assert torch.equal(embeds[: len(ex.before) + 1], emb(ids))
    assert torch.equal(embeds[prefix - 1], emb(torch.tensor(eop, device=emb.weight.device)))
    if n:
        assert torch.equal(embeds[len(ex.before) + 1: prefix - 1], slot)
    # The supervised targets are the reference solution's tokens (the assistant turn).
    sup = [t for t in labels if t != IGNORE]
    solution = conv.tokenize(lm.tokenizer, samples[0].data["solution"])
    assert sup == solution[: len(sup)] or sup[:-1] == solution  # truncated by max_len, or + <|im_end|>


# ------------------------------------------------------------------ task 2: one slot function


@pytest.mark.parametrize("kind", ["latent", "text"])
def test_slot_rows_identical_at_training_and_evaluation(kind, trained, math_train, monkeypatch):
    from interlat_bench.methods import interlat

    folder = trained.latent if kind == "latent" else trained.text
    sample = math_train[0]
    msg = trained.messages[sample.id]
    # Evaluation: the method's own messages/message_for/transform and the loaded receiver's slot.
    method = interlat.Latent() if kind == "latent" else interlat.Text()
    messages = {sample.id: method.shipped(msg)}  # the plan as the method's sender ships it
    sent = method.transform(method.message_for(sample, messages, 0), torch.Generator())
    assert sent.kind == kind
    receiver = load_receiver(folder)
    evaluated = receiver.slot(sent)

    # Training: the examples and SlotReceiver exactly as train_receiver builds them.
    lm, adapter, cfg = receiver.lm, receiver.adapter, receiver.cfg
    assert receiver.kind == kind and cfg.max_slot_rows == MAX_ROWS
    bop, eop = conv.add_slot_tokens(lm)
    ex = build_examples(lm.tokenizer, [sample], {sample.id: msg}, kind, cfg)[0]
    module = SlotReceiver(lm.model, adapter, kind, bop, eop, cfg.weights(), seed=cfg.seed)
    module.train()
    with torch.no_grad():
        trained_rows = module.slot(ex, ex.latents, 1.0)

    # The message is longer than the slot: both sides keep its first MAX_ROWS rows / tokens.
    plan_ids = conv.tokenize(lm.tokenizer, msg.text)
    assert msg.latents.shape[0] > MAX_ROWS and len(plan_ids) > MAX_ROWS
    assert trained_rows.shape == evaluated.shape == (MAX_ROWS, lm.hidden_size)
    for row in range(MAX_ROWS):
        assert torch.allclose(trained_rows[row], evaluated[row], rtol=0, atol=1e-6), row
    with torch.no_grad():
        if kind == "latent":
            # Truncation happens before the adapter (its attention mixes rows), on both sides.
            latents = msg.latents.to(lm.model.device)
            expect = adapter(latents[:MAX_ROWS])
            assert not torch.allclose(adapter(latents)[:MAX_ROWS], expect, atol=1e-6)
        else:  # the receiver's own tokenizer on the plan text
            expect = lm.model.get_input_embeddings()(torch.tensor(plan_ids[:MAX_ROWS], device=lm.model.device))
    assert torch.allclose(evaluated, expect, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ (c) curriculum per optimizer step


def test_curriculum_ratio_is_per_optimizer_step(trained):
    cfg = trained.cfg
    with open(trained.latent / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    ratios = [float(r["ratio"]) for r in rows]
    total = 4  # 8 conversations / (2 per batch * 2 micro-batches) * 2 epochs
    assert steps == [s for s in range(total) for _ in range(cfg.grad_accum)]
    curriculum = Curriculum(cfg.curriculum, seed=cfg.seed)
    expect = [curriculum.ratio(s, total) for s in steps]
    assert ratios == pytest.approx(expect, abs=1e-12)
    assert len(set(expect)) == total  # the schedule moves every step: a per-micro-batch ratio shows
    assert expect[-1] == 1.0          # and ends on pure latents
    # What the slot actually received in the CE pass: the same ratio for every example of
    # every micro-batch of an optimizer step.
    passed = [r for _, r in trained.slot_calls]
    assert len(passed) == len(rows) * cfg.batch_size
    assert passed == pytest.approx([r for r in expect for _ in range(cfg.batch_size)], abs=1e-12)


# ------------------------------------------------------------------ (d) plan and negative passes


def test_plan_and_negative_passes(math_train, monkeypatch):
    lm, bop, eop = tiny_receiver()
    cfg = TrainConfig(max_len=32, max_slot_rows=MAX_ROWS)
    samples = math_train[:3]
    msgs = fake_messages(samples, seed=1)
    examples = build_examples(lm.tokenizer, samples, msgs, "latent", cfg)
    torch.manual_seed(0)
    adapter = CommAdapter(SENDER_DIM, lm.hidden_size).to(lm.model.device)
    weights = LossWeights(plan=0.37, neg=0.23, margin=0.41)
    module = SlotReceiver(lm.model, adapter, "latent", bop, eop, weights, seed=5)
    module.train()
    module.ratio = 0.5  # mid-curriculum: the CE slot mixes latents and plan; the other passes do not

    passes, slots = [], []
    real_logits, real_slot = SlotReceiver._logits, SlotReceiver.slot

    def spy_logits(self, seqs):
        out = real_logits(self, seqs)
        passes.append({"seqs": seqs, "grad": torch.is_grad_enabled(), "out": out})
        return out

    def spy_slot(self, ex, latents, ratio):
        out = real_slot(self, ex, latents, ratio)
        slots.append((ex, latents, ratio, out))
        return out

    monkeypatch.setattr(SlotReceiver, "_logits", spy_logits)
    monkeypatch.setattr(SlotReceiver, "slot", spy_slot)
    total = module(examples)

    assert [p["grad"] for p in passes] == [True, False, False]  # CE pass, plan pass, negative pass
    (lat_logits, targets, sup), (plan_logits, _, plan_sup), (neg_logits, _, neg_sup) = (p["out"] for p in passes)
    assert lat_logits.requires_grad and not plan_logits.requires_grad and not neg_logits.requires_grad
    emb = lm.model.get_input_embeddings()

    def slot_of(seq, ex):
        embeds, _ = seq
        return embeds[len(ex.before) + 1: embeds.shape[0] - len(ex.after) - 1]

    with torch.no_grad():
        for ex, plan_seq, neg_seq in zip(examples, passes[1]["seqs"], passes[2]["seqs"]):
            # Plan pass: the plan text's embeddings alone (receiver tokens, first MAX_ROWS).
            plan_rows = emb(torch.tensor(ex.plan_ids[:MAX_ROWS], device=emb.weight.device))
            assert torch.equal(slot_of(plan_seq, ex), plan_rows)
            # Negative pass: another task's latents through the adapter, fitted to this length.
            own = ex.latents
            neg_in = next(lat for e, lat, _, _ in slots[2 * len(examples):] if e is ex)
            assert neg_in.shape == own.shape and not torch.equal(neg_in, own)
            others = [o.latents for o in examples if o is not ex]
            fitted = [o.repeat((own.shape[0] + o.shape[0] - 1) // o.shape[0], 1)[: own.shape[0]] for o in others]
            assert any(torch.equal(neg_in, f) for f in fitted)
            assert torch.allclose(slot_of(neg_seq, ex), adapter(neg_in[:MAX_ROWS].to(emb.weight.device)),
                                  rtol=0, atol=1e-6)
            assert not torch.allclose(slot_of(neg_seq, ex), adapter(own[:MAX_ROWS].to(emb.weight.device)), atol=1e-3)
    n = len(examples)
    assert [lat is ex.latents for ex, lat, _, _ in slots[:n]] == [True] * n  # CE: own latents ...
    assert [r for _, _, r, _ in slots[:n]] == [0.5] * n                     # ... at the step's ratio
    assert [lat for _, lat, _, _ in slots[n: 2 * n]] == [None] * n          # plan pass: no latents
    assert [r for _, _, r, _ in slots[2 * n:]] == [1.0] * n                 # negatives: pure latents

    # The losses: computed from those passes, combined with the configured weights.
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(lat_logits[sup], targets[sup])
        plan = plan_alignment_loss(lat_logits, plan_logits, sup, plan_sup)
        neg = separation_loss(lat_logits, neg_logits, sup, neg_sup, 0.41)
        expect, _ = combine(ce, plan, neg, weights)
    assert module.last_parts["plan"] == pytest.approx(float(plan), rel=1e-6)
    assert module.last_parts["neg"] == pytest.approx(float(neg), rel=1e-6)
    assert module.last_parts["w_plan"] == 0.37 and module.last_parts["w_neg"] == 0.23
    assert total.item() == pytest.approx(float(ce) + 0.37 * float(plan) + 0.23 * float(neg), rel=1e-6)
    assert total.item() == pytest.approx(float(expect), rel=1e-6)
    assert float(plan) > 0 and float(neg) > 0  # both terms are live, so a swap would show
    total.backward()
    assert all(p.grad is not None for p in adapter.parameters())


def test_plan_ce_trains_the_plan_pass_and_leaves_l_plan_target_detached(math_train):
    """plan_ce_weight > 0: the plan-text pass runs with gradient and its CE joins the loss with
    that weight; L_plan still reads it as a fixed target. Off (the SPEC's loss), the pass is
    gradient-free and the total is the same as before the option existed."""
    lm, bop, eop = tiny_receiver()
    cfg = TrainConfig(max_len=32, max_slot_rows=MAX_ROWS)
    samples = math_train[:3]
    examples = build_examples(lm.tokenizer, samples, fake_messages(samples, seed=1), "latent", cfg)
    torch.manual_seed(0)
    adapter = CommAdapter(SENDER_DIM, lm.hidden_size).to(lm.model.device)
    totals, grads = {}, {}
    for w in (0.0, 0.8):
        module = SlotReceiver(lm.model, adapter, "latent", bop, eop, LossWeights(plan=0.5, neg=0.0, plan_ce=w), seed=5)
        module.train()
        lm.model.zero_grad()
        total = module(examples)
        totals[w], parts = total, dict(module.last_parts)
        if w:
            with torch.no_grad():
                plan_logits, plan_targets, plan_sup = module._logits(
                    [module._sequence(ex, module.slot(ex, None, 0.0)) for ex in examples])
                plan_ce = torch.nn.functional.cross_entropy(plan_logits[plan_sup], plan_targets[plan_sup])
            assert parts["plan_ce"] == pytest.approx(float(plan_ce), rel=1e-5) and parts["w_plan_ce"] == w
            assert total.item() == pytest.approx(parts["ce"] + 0.5 * parts["plan"] + w * float(plan_ce), rel=1e-5)
        else:
            assert "plan_ce" not in parts
            assert total.item() == pytest.approx(parts["ce"] + 0.5 * parts["plan"], rel=1e-6)
        total.backward()
        grads[w] = lm.model.get_input_embeddings().weight.grad.clone()
    # The plan pass adds gradient of its own to the receiver (the embeddings it reads).
    assert not torch.allclose(grads[0.0], grads[0.8])
    assert TrainConfig(plan_ce_weight=0.0).key_dict() == TrainConfig().key_dict()  # old keys unchanged
    assert TrainConfig(plan_ce_weight=0.8).key_dict()["plan_ce_weight"] == 0.8


def test_packed_logits_equal_the_full_forward_at_supervised_positions(math_train):
    lm, bop, eop = tiny_receiver()
    cfg = TrainConfig(max_len=48, max_slot_rows=MAX_ROWS)
    samples = math_train[:3]
    examples = build_examples(lm.tokenizer, samples, fake_messages(samples), "text", cfg)
    module = SlotReceiver(lm.model, None, "text", bop, eop, cfg.weights())
    with torch.no_grad():
        seqs = [module._sequence(ex, module.slot(ex, None, 1.0)) for ex in examples]
        logits, targets, mask = module._logits(seqs)
        assert logits.shape[:2] == targets.shape == mask.shape
        for i, (embeds, labels) in enumerate(seqs):
            full = lm.model(inputs_embeds=embeds[None]).logits[0, :-1].float()
            want = [t for t, label in enumerate(labels[1:]) if label != IGNORE]
            assert int(mask[i].sum()) == len(want) > 0 and not mask[i, len(want):].any()
            torch.testing.assert_close(logits[i, :len(want)], full[want], atol=1e-4, rtol=1e-4)
            assert targets[i, :len(want)].tolist() == [labels[1:][t] for t in want]


def test_adapter_warm_up_pulls_rows_to_their_tokens_and_leaves_the_receiver_alone():
    from interlat_bench.benchmarks.base import Sample
    from interlat_bench.harness.core import progress
    from interlat_bench.trainers.receiver import warm_up_adapter

    lm, _, _ = tiny_receiver()
    tok = lm.tokenizer
    table = torch.randn(len(tok), SENDER_DIM, generator=torch.Generator().manual_seed(3))
    samples, messages = [], {}
    for i, text in enumerate(["the red box holds the key", "the blue box holds the coin", "a green cup"] * 3):
        ids = conv.tokenize(tok, text)
        sid = f"s{i}"
        samples.append(Sample(sid, text, {"conversation": [{"role": "user", "content": "Where?"},
                                                           {"role": "assistant", "content": "red"}]}))
        messages[sid] = Message(kind="latent", text=text, token_ids=tuple(ids), latents=table[ids])
    # A message whose token ids do not spell its text (another tokenizer) is not used.
    messages["s0"] = Message(kind="latent", text="something else", token_ids=messages["s0"].token_ids,
                             latents=messages["s0"].latents)
    cfg = TrainConfig(max_len=16, max_slot_rows=MAX_ROWS, batch_size=4, adapter_lr=1e-2, adapter_warmup_steps=150)
    examples = build_examples(tok, samples, messages, "latent", cfg)
    assert examples[0].row_tokens is None and all(ex.row_tokens is not None for ex in examples[1:])
    torch.manual_seed(0)
    adapter = CommAdapter(SENDER_DIM, lm.hidden_size).to(lm.model.device)
    embed = lm.model.get_input_embeddings()
    before_lm = {k: v.clone() for k, v in lm.model.state_dict().items()}

    def error():
        with torch.no_grad():
            return sum(float(torch.nn.functional.mse_loss(
                adapter(ex.latents[:MAX_ROWS].to(embed.weight.device)),
                embed(torch.tensor(ex.row_tokens[:MAX_ROWS], device=embed.weight.device)))) for ex in examples[1:])

    class Shown:  # what a progress display is told
        stages = []

        def __init__(self, name, total):
            self.stages.append(self)
            self.name, self.total, self.done, self.info = name, total, 0, ""

        def advance(self, n=1, info=""):
            self.done, self.info = self.done + n, info or self.info

        def close(self):
            pass

    start = error()
    before = progress.use(Shown)
    try:
        final = warm_up_adapter(adapter, embed, examples, cfg, log=quiet)
    finally:
        progress.use(before)
    assert final is not None and error() < 0.2 * start
    # The warm-up is a stage the user sees move (minutes at the probe preset), with its loss.
    [shown] = Shown.stages
    assert (shown.name, shown.total, shown.done) == ("warm up the adapter", 150, 150)
    assert shown.info.startswith("loss ")
    assert all(torch.equal(v, lm.model.state_dict()[k]) for k, v in before_lm.items())

    # With the cross-entropy term each row also singles out its own token among the plan's.
    def picks(adapter):
        vocabulary = sorted({t for ex in examples[1:] for t in ex.row_tokens})
        with torch.no_grad():
            return [[vocabulary[int(i)] for i in (adapter(ex.latents[:MAX_ROWS]) @ embed.weight[vocabulary].T)
                     .argmax(-1)] == ex.row_tokens[:MAX_ROWS] for ex in examples[1:]]

    torch.manual_seed(0)
    with_ce = CommAdapter(SENDER_DIM, lm.hidden_size).to(lm.model.device)
    warm_up_adapter(with_ce, embed, examples, replace(cfg, warmup_ce_weight=1.0), log=quiet)
    assert all(picks(with_ce))
    assert not torch.equal(with_ce.fc1.weight, adapter.fc1.weight)


def test_plan_vocabulary_loss_is_cross_entropy_over_the_plan_tokens_only():
    from interlat_bench.trainers.receiver import plan_vocabulary_loss

    embed = torch.nn.Embedding(50, 8)
    vocabulary = torch.tensor([3, 7, 20, 41])
    tokens = torch.tensor([7, 41, 3])
    rows = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    logits = rows @ embed.weight[vocabulary].T
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 3, 0]))
    assert torch.allclose(plan_vocabulary_loss(rows, tokens, embed(vocabulary), vocabulary), expected)
    # A row at its own token's embedding costs less than one at a competitor's.
    at_own = plan_vocabulary_loss(embed.weight[tokens].detach() * 5, tokens, embed(vocabulary), vocabulary)
    at_other = plan_vocabulary_loss(embed.weight[tokens.roll(1)].detach() * 5, tokens, embed(vocabulary),
                                    vocabulary)
    assert at_own < at_other


def test_warm_up_settings_key_only_latent_receivers():
    from interlat_bench.benchmarks.probe import ProbeBenchmark
    from interlat_bench.methods.interlat import LATENT_ONLY, Latent, NoComm, Text

    bench = ProbeBenchmark({})
    latent = Latent({}).train_config(bench).key_dict()
    assert latent["adapter_warmup_steps"] == ProbeBenchmark.train_overrides["adapter_warmup_steps"]
    # The probe no longer uses the cross-entropy term; unset, it stays out of the key.
    assert "warmup_ce_weight" not in latent
    with_ce = replace(Latent({}).train_config(bench), warmup_ce_weight=0.1).key_dict()
    assert with_ce["warmup_ce_weight"] == 0.1
    # Settings that only an adapter reads leave the text and no_comm receivers (and their
    # run keys) alone: tuning the warm-up must not retrain them.
    for method in (Text({}), NoComm({})):
        config = method.train_config(bench).key_dict()
        assert config["adapter_warmup_steps"] == 0
        assert "warmup_ce_weight" not in config and "warmup_lr" not in config
        assert {k: v for k, v in config.items() if k not in LATENT_ONLY} == \
            {k: v for k, v in latent.items() if k not in LATENT_ONLY}


def test_grouping_by_length_cuts_padding_keeps_every_example_once_and_leaves_old_keys_alone(math_train):
    from interlat_bench.trainers.checkpoint import checkpoint_key
    from interlat_bench.trainers.config import PRESETS
    from interlat_bench.trainers.receiver import LengthBatches, padding_share, sequence_length

    tok = models.tokenizer("tiny-llama")
    cfg = TrainConfig(max_len=512)
    examples = build_examples(tok, math_train[:32], {}, "none", cfg)
    lengths = [sequence_length(ex) for ex in examples]
    assert lengths == [len(ex.before) + 2 + len(ex.after) for ex in examples]  # bop, eop, no rows
    sampler = LengthBatches(lengths, 2, seed=0)
    order, again = list(sampler), list(sampler)
    assert sorted(order) == sorted(again) == list(range(len(examples)))  # each epoch sees each example once
    assert order != again and order == list(LengthBatches(lengths, 2, seed=0))  # drawn per epoch, seeded
    shuffled = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    assert padding_share(examples, order, 2) < padding_share(examples, shuffled, 2) / 2
    assert padding_share(examples, sorted(range(len(examples)), key=lengths.__getitem__), 2) < 0.05
    assert PRESETS["quick"].group_by_length and PRESETS["cpu"].group_by_length
    assert not PRESETS["paper"].group_by_length  # the paper's order: shuffled
    # Off, the field is left out of the checkpoint key: receivers cached before it still match.
    args = ("tiny-llama", "none", ["a", "b"], None, "float32", None)
    off, on = (checkpoint_key(args[0], args[1], TrainConfig(group_by_length=g), *args[2:]) for g in (False, True))
    assert off != on
    import hashlib
    import json
    from dataclasses import asdict

    from interlat_bench.trainers.checkpoint import TRAIN_VERSION

    legacy = {k: v for k, v in asdict(TrainConfig()).items() if k not in ("group_by_length", "detours", "warmup_lr",
                                                                            "warmup_ce_weight", "warmup_plans",
                                                                            "plan_ce_weight", "adapter_positions")}
    blob = json.dumps({"v": TRAIN_VERSION, "receiver": "tiny-llama", "kind": "none", "cfg": legacy,
                       "data": hashlib.sha256(b"a\nb").hexdigest(), "messages": None, "dtype": "float32",
                       "sender_dim": None}, sort_keys=True)
    assert off == hashlib.sha256(blob.encode()).hexdigest()[:16]
    # A whole number given for a float field trains the same receiver: it gets the same key.
    two, two_f = (checkpoint_key(args[0], args[1], TrainConfig(epochs=e, lr=1e-4), *args[2:]) for e in (2, 2.0))
    assert two == two_f != checkpoint_key(args[0], args[1], TrainConfig(epochs=3, lr=1e-4), *args[2:])
    assert isinstance(asdict(TrainConfig(epochs=2))["epochs"], float)  # what the run key carries too


def _probe_latent_setup(n: int, **overrides):
    """The probe's latent training config (its quick preset) on ``n`` training tasks, and
    latent messages that stand for the plan's tokens: row i is a fixed random vector of token
    i, 40x the scale of an embedding, like last-layer states (SmolLM2: row norm 47 vs 2.8)."""
    from dataclasses import replace

    from interlat_bench.benchmarks.probe import ProbeBenchmark
    from interlat_bench.methods.interlat import Latent

    bench = ProbeBenchmark({})
    cfg = replace(Latent({}).train_config(bench), n_train=n, **overrides)
    tok = models.tokenizer("tiny-llama")
    table = 40 * torch.randn(len(tok), SENDER_DIM, generator=torch.Generator().manual_seed(3))
    samples = bench.train_samples(limit=n)
    messages = {}
    for s in samples:
        ids = conv.tokenize(tok, s.task)
        messages[s.id] = Message(kind="latent", text=s.task, token_ids=tuple(ids), latents=table[ids])
    return cfg, samples, messages


@pytest.mark.slow
def test_probe_warm_up_leaves_rows_at_their_tokens_embeddings():
    """The cause found at 4 facts x 4 options (SmolLM2 -> SmolLM2): the warm-up's cross-entropy
    term over the plan vocabulary (dot-product logits, weight 0.1, 1000 steps) grew each row
    along what tells its token from the others, held back by the MSE alone: held-out fact rows
    came out at 2.0x their token embedding's norm (cosine 0.82), and the latent receiver read
    them 10 points worse than the same rows snapped to their tokens (fidelity 82.0% against the
    text receiver's 95.9%; 95.1% after the preset's MSE-only warm-up of 3000 steps). The
    preset's warm-up must leave rows of plans it never read at their token's norm and
    direction. Here, tiny model: norm ratio 1.02 and cosine 0.95 with the preset, 4.2 with the
    old term."""
    from interlat_bench.trainers.receiver import warm_up_adapter

    cfg, samples, messages = _probe_latent_setup(80)
    lm, _, _ = tiny_receiver()
    embed = lm.model.get_input_embeddings()
    examples = build_examples(lm.tokenizer, samples[:64], messages, "latent", cfg)
    held_out = [messages[s.id] for s in samples[64:]]

    def closeness(cfg) -> tuple[float, float]:
        torch.manual_seed(0)
        adapter = CommAdapter(SENDER_DIM, lm.hidden_size).to(embed.weight.device)
        warm_up_adapter(adapter, embed, examples, cfg, log=quiet)
        ratio, cosine = [], []
        with torch.no_grad():
            for m in held_out:
                rows = adapter(m.latents.to(embed.weight.device))
                target = embed(torch.tensor(m.token_ids[: len(rows)], device=embed.weight.device))
                ratio += (rows.norm(dim=-1) / target.norm(dim=-1)).tolist()
                cosine += torch.cosine_similarity(rows, target, dim=-1).tolist()
        return sum(ratio) / len(ratio), sum(cosine) / len(cosine)

    ratio, cosine = closeness(cfg)
    assert 0.8 < ratio < 1.25 and cosine > 0.9, (ratio, cosine)
    old_ratio, _ = closeness(replace(cfg, adapter_warmup_steps=1000, warmup_ce_weight=0.1))
    assert old_ratio > 2, old_ratio  # what the receiver was given before

@pytest.mark.slow
def test_probe_training_keeps_the_colour_rows_the_warm_up_aligned(tmp_path):
    """The probe's latent receiver lost the colour when the joint training ran the adapter at
    the warm-up's rate (1e-3): Adam's steps of about lr per weight, on gradients that carry
    little about the slot until the curriculum reaches the colour's row, walked the adapter
    away from the warm-up (SmolLM2: colour rows' cosine with their tokens 0.99 -> 0.09,
    accuracy 24.6% at chance 25%). The preset trains the adapter at 1e-4 after a 1e-3 warm-up.
    Here, on a tiny receiver: 0.83 with the preset, 0.57 at 1e-3 throughout."""
    from interlat_bench.benchmarks.probe import COLOURS

    cfg, samples, messages = _probe_latent_setup(64)
    assert cfg.warmup_lr > cfg.adapter_lr
    receiver = load_receiver(train_receiver("tiny-llama", "latent", samples, messages, cfg, out_root=tmp_path,
                                            log=quiet))
    embed = receiver.lm.model.get_input_embeddings().weight.detach()
    colours = {receiver.lm.tokenizer.convert_tokens_to_ids("Ġ" + c) for c in COLOURS}
    cosines = []
    with torch.no_grad():
        for m in messages.values():
            rows = receiver.adapter(m.latents.to(embed.device))
            cosines += [float(torch.cosine_similarity(rows[i], embed[t], dim=0))
                        for i, t in enumerate(m.token_ids) if t in colours]
    assert len(cosines) >= 64 and sum(cosines) / len(cosines) > 0.7


def test_same_seed_trains_the_same_receiver_and_another_seed_another(tmp_path):
    """Training is a function of its settings: two trainings with one seed give the same
    weights, bit for bit (CPU, fp32, the same threads); the seed is what varies a replicate."""
    from safetensors.torch import load_file

    def weights(seed: int, folder: str) -> dict:
        cfg, samples, messages = _probe_latent_setup(16, adapter_warmup_steps=20, seed=seed)
        ck = train_receiver("tiny-llama", "latent", samples, messages, cfg, out_root=tmp_path / folder, log=quiet)
        return {**load_file(ck / "receiver" / "model.safetensors"),
                **{f"adapter.{k}": v for k, v in load_file(ck / "adapter" / "comm_adapter.safetensors").items()}}

    first, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if k.startswith("adapter."))


def test_a_receiver_is_keyed_by_what_it_trains_on_not_only_by_sample_ids(tmp_path):
    """The probe numbers its samples alike at every rung (``probe/train/00000`` ...), and a
    receiver without messages has no collection key to tell rungs apart: before its key held a
    digest of each conversation, the ``no_comm`` receiver trained at 2 x 8 was reused at 8 x 4,
    where it answered 4-option tasks with the 8 colours it had learnt. A setting that leaves the
    conversations alone (``plan_shots``: the sender's examples) still finds the same receiver."""
    from interlat_bench.benchmarks.probe import ProbeBenchmark

    cfg = TrainConfig(n_train=8, batch_size=8, epochs=1.0, max_len=32)

    def checkpoint(params: dict):
        samples = ProbeBenchmark(params).train_samples(limit=8)
        return train_receiver("tiny-llama", "none", samples, {}, cfg, out_root=tmp_path, log=quiet)

    two_by_eight = checkpoint({"n_facts": 2, "n_options": 8})
    assert checkpoint({"n_facts": 8, "n_options": 4}) != two_by_eight
    assert checkpoint({"n_facts": 2, "n_options": 8, "seed": 1}) != two_by_eight
    assert checkpoint({"n_facts": 2, "n_options": 8, "plan_shots": 2}) == two_by_eight
