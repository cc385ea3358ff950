"""ALFWorld's action=rank diagnostic: the receiver takes the admissible command it finds most likely."""

from __future__ import annotations

import torch

from interlat_bench.benchmarks.base import Sample
from interlat_bench.harness.core import conversation as conv
from interlat_bench.harness.core.generation import Decoding
from interlat_bench.harness.core.message import NO_MESSAGE
from interlat_bench.harness.core.models import load
from interlat_bench.methods.agents import ReceiverAgent

# Whole replies in ALFWorld's format (AlfworldBenchmark.action_reply), as the benchmark offers them.
OPTIONS = [f"Action: {a}" for a in ("go to shelf 1", "look", "open drawer 2", "take apple 1 from countertop 3")]


def reply_logprob(lm, messages: list[dict], reply: str) -> float:
    """Log-probability of the assistant reply (with its end-of-turn token) by one full forward."""
    tok = lm.tokenizer
    head = conv.tokenize(tok, conv.render(tok, messages, add_generation_prompt=True))
    ids = conv.tokenize(tok, reply)
    end = sorted(ReceiverAgent(lm, Decoding()).eos)[0]
    full = torch.tensor(head + ids + [end], device=lm.model.device)[None]
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(full).logits[0].float(), -1)
    targets = full[0, len(head):]
    return float(logp[len(head) - 1: -1].gather(1, targets[:, None]).sum())


def test_choose_takes_the_most_likely_option_and_keeps_the_cache_consistent():
    lm = load("tiny-llama", dtype="float32")
    dec = Decoding(greedy=True, max_new_tokens=6, lookup_tokens=0)
    sample = Sample("g1", "put an apple on the shelf")
    cached, fresh = ReceiverAgent(lm, dec), ReceiverAgent(lm, dec, reencode=True)
    for agent in (cached, fresh):
        agent.begin("You are in a kitchen. Your task is to: put an apple on the shelf.", NO_MESSAGE, sample)
    opening = list(cached.messages)
    scores = {o: reply_logprob(lm, opening, o) for o in OPTIONS}
    chosen = cached.choose(None, OPTIONS)
    assert chosen == max(scores, key=scores.get)
    assert fresh.choose(None, OPTIONS) == chosen
    # Cache + pending hold exactly the history: nothing of the chosen reply lost or doubled.
    assert cached.past.get_seq_length() + len(cached.pending) == len(cached.history_ids) == len(fresh.history)
    # The next turns build on the chosen reply exactly as a full re-encode of the history does.
    for obs in ("Observation: Nothing happens.", "Observation: You see a shelf."):
        assert cached.respond(obs) == fresh.respond(obs)
    assert cached.choose("Observation: ok", OPTIONS) == fresh.choose("Observation: ok", OPTIONS)


def test_packed_scoring_equals_scoring_each_option_alone():
    """One forward with a block mask gives each option's own log-probability (long and short
    packs: the short one goes through the packed-GQA attention path)."""
    from interlat_bench.harness.core.generation import extend_logits, score_continuations

    lm = load("tiny-llama", dtype="float32")
    model, embed = lm.model, lm.model.get_input_embeddings()
    prompt = list(range(20, 60))
    for options in ([[5, 6, 7], [8], [9, 10, 11, 12, 13, 14]], [[5, 6], [7], [8, 9]]):
        with torch.no_grad():
            cache, logp = extend_logits(model, embed(torch.tensor(prompt, device=model.device)), None)
        packed = score_continuations(model, cache, options, logp[-1])
        assert cache.get_seq_length() == len(prompt)  # cropped back
        for option, got in zip(options, packed):
            full = torch.tensor(prompt + option, device=model.device)[None]
            with torch.no_grad():
                lp = torch.log_softmax(model(full).logits[0].float(), -1)
            want = float(lp[len(prompt) - 1: -1].gather(1, torch.tensor(option, device=model.device)[:, None]).sum())
            assert abs(got - want) < 1e-4, (options, option)
