"""Compression training (SPEC section 5): only the student learns; the receiver stays as trained."""

from __future__ import annotations

import pytest
import torch

from interlat_bench.benchmarks.probe import ProbeBenchmark
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.trainers.checkpoint import load_receiver
from interlat_bench.trainers.compression import CompressConfig, load_student, train_student
from interlat_bench.trainers.config import TrainConfig
from interlat_bench.trainers.receiver import train_receiver

HIDDEN = 64  # tiny-llama, sender and receiver


def messages(samples, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {s.id: Message(kind=MessageKind.LATENT, text="The key is in the blue box.", token_ids=tuple(range(7)),
                          latents=torch.randn(7, HIDDEN, generator=g) * 5) for s in samples}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import os

    old = os.environ.get("INTERLAT_CACHE")
    os.environ["INTERLAT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    train = ProbeBenchmark({"n_train": 8, "n_test": 4}).train_samples()
    msgs = messages(train)
    folder = train_receiver("tiny-llama", "latent", train, msgs, TrainConfig(n_train=8, batch_size=4, max_len=48),
                            log=lambda *_: None)
    yield train, msgs, folder
    if old is None:
        os.environ.pop("INTERLAT_CACHE")
    else:
        os.environ["INTERLAT_CACHE"] = old


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_only_the_student_and_its_head_learn(setup):
    train, msgs, folder = setup
    receiver = load_receiver(folder)
    before_lm, before_adapter = state(receiver.lm.model), state(receiver.adapter)
    cfg = CompressConfig(k=3, epochs=1.0, batch_size=4, lr=1e-3, head_lr=1e-2)
    student_folder = train_student("tiny-llama", receiver, folder, train, msgs, cfg, log=lambda *_: None)
    after_lm, after_adapter = state(receiver.lm.model), state(receiver.adapter)
    assert all(torch.equal(before_lm[k], after_lm[k]) for k in before_lm)
    assert all(torch.equal(before_adapter[k], after_adapter[k]) for k in before_adapter)
    # The student moved away from the sender it started as, and so did its head.
    from interlat_bench.collectors.latent_steps import LatentStepHead
    from interlat_bench.harness.core.models import load

    sender = load("tiny-llama", dtype="float32").model
    student = load_student(student_folder)
    moved = [not torch.equal(p, q) for p, q in zip(sender.parameters(), student.lm.model.parameters())]
    assert sum(moved) > len(moved) // 2
    initial = LatentStepHead.initial(sender.get_input_embeddings())
    assert not torch.equal(initial.lat_bos, student.head.lat_bos)
    assert not torch.equal(initial.proj.weight, student.head.proj.weight)
    # Cached by content: a second call reuses the folder.
    assert train_student("tiny-llama", receiver, folder, train, msgs, cfg, log=lambda *_: None) == student_folder


def test_gradients_reach_the_student_and_not_the_receiver(setup):
    from interlat_bench.collectors.latent_steps import LatentStepHead
    from interlat_bench.collectors.messages import prompt_ids
    from interlat_bench.harness.core import conversation as conv
    from interlat_bench.harness.core.models import load
    from interlat_bench.harness.core.prompts import LATENT_STEP_PROMPT
    from interlat_bench.trainers.compression import CompressionObjective
    from interlat_bench.trainers.receiver import SlotReceiver, build_examples

    train, msgs, folder = setup
    receiver = load_receiver(folder)
    bop, eop = conv.add_slot_tokens(receiver.lm)
    frozen = SlotReceiver(receiver.lm.model, receiver.adapter, "latent", bop, eop, receiver.cfg.weights())
    for p in frozen.parameters():
        p.requires_grad_(False)
    student = load("tiny-llama", dtype="float32")
    head = LatentStepHead.initial(student.model.get_input_embeddings())
    examples = build_examples(receiver.lm.tokenizer, train[:2], msgs, "latent", receiver.cfg)
    prompts = [prompt_ids(student.tokenizer, LATENT_STEP_PROMPT, s.task) for s in train[:2]]
    objective = CompressionObjective(student.model, head, frozen, student.tokenizer.eos_token_id, CompressConfig(k=2))
    objective(examples, prompts).backward()
    assert set(objective.last_parts) == {"loss", "ce", "kl", "align"}
    assert all(p.grad is None for p in frozen.parameters())
    assert head.lat_bos.grad is not None and head.proj.weight.grad.abs().sum() > 0
    grads = [p.grad for p in student.model.parameters()]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > len(grads) // 2
