"""The KV-cached multi-turn receiver must match a full re-encode of the same history."""

import torch

from interlat_bench.benchmarks.base import Sample
from interlat_bench.harness.core import models
from interlat_bench.harness.core.generation import Decoding, cache_arg
from interlat_bench.methods.agents import ReceiverAgent
from interlat_bench.methods.base import Message


def _play(agent, turns=4):
    agent.begin("Your task is to: put a clean mug in coffeemachine.", Message(kind="text", text="1. find mug"),
                Sample("t1", "task"))
    replies = [agent.respond()]
    for i in range(turns - 1):
        replies.append(agent.respond(f"Observation: you see thing {i}."))
    return replies


def test_cached_turns_equal_reencoded_turns():
    lm = models.load("tiny-llama", dtype="float32")
    dec = Decoding(max_new_tokens=5)
    cached, full = ReceiverAgent(lm, dec), ReceiverAgent(lm, dec, reencode=True)
    assert _play(cached) == _play(full)
    # Same token history, and the same next-token logits from the cache as from scratch.
    assert torch.equal(cached.history, full.history)
    with torch.no_grad():
        ref = lm.model(inputs_embeds=torch.cat([cached.history, cached.pending[1:]])[None]).logits[0, -1]
        out = lm.model(inputs_embeds=cached.pending[None], **cache_arg(lm.model, cached.past)).logits[0, -1]
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()


def _ids(lm, embeds):
    table = lm.model.get_input_embeddings().weight
    return [int((table - row).abs().sum(-1).argmin()) for row in embeds]


def test_cache_feeds_only_new_tokens():
    lm = models.load("tiny-llama", dtype="float32")
    agent = ReceiverAgent(lm, Decoding(max_new_tokens=3))
    _play(agent, turns=3)
    before = agent.history.shape[0]
    agent._add_user("Observation: you see thing 9.")
    # Only the last sampled token, the end of its turn and the new user turn are queued.
    queued = lm.tokenizer.decode(_ids(lm, agent.pending[1:]))
    assert queued == "<|im_end|>\n<|im_start|>user\nObservation: you see thing 9.<|im_end|>\n<|im_start|>assistant\n"
    assert agent.past.get_seq_length() + agent.pending.shape[0] == agent.history.shape[0] > before


def test_fed_text_is_the_chat_template_rendering():
    lm = models.load("tiny-llama", dtype="float32")
    agent = ReceiverAgent(lm, Decoding(max_new_tokens=3))
    _play(agent, turns=3)
    fed = lm.tokenizer.decode(_ids(lm, agent.history))
    rendered = lm.tokenizer.apply_chat_template(agent.messages, tokenize=False)
    assert rendered.startswith(fed)  # the final reply's closing tokens are not fed yet
    assert len(rendered) - len(fed) <= len("<|im_end|>\n")


def test_first_token_time_is_part_of_the_turn():
    lm = models.load("tiny-llama", dtype="float32")
    agent = ReceiverAgent(lm, Decoding(max_new_tokens=6))
    agent.begin("Your task is to: look.", Message(), Sample("t1", "task"))
    agent.respond()
    # Recorded per turn, positive, and no more than the receiver's whole time for the turn.
    assert 0 < agent.last_first_token_ms <= agent.timings_ms()["receiver"]
