"""Prompt lookup must only change how many steps greedy decoding takes, not what it writes."""

import torch

from interlat_bench.benchmarks.base import Sample
from interlat_bench.harness.core import models
from interlat_bench.harness.core.generation import Decoding, draft_from_context, generate
from interlat_bench.methods.agents import ReceiverAgent
from interlat_bench.methods.base import Message


def test_draft_follows_the_latest_match_of_the_longest_ngram():
    assert draft_from_context([5, 2, 3, 9, 4, 2, 3, 7, 8, 1, 2, 3], k=2) == [7, 8]  # "2 3" twice: latest
    assert draft_from_context([4, 5, 6, 1, 7, 5, 6], k=3) == [1, 7, 5]             # 3-gram absent, 2-gram "5 6"
    assert draft_from_context([4, 5, -1, -1, 4], k=3) == [5]                        # a slot row ends the draft
    assert draft_from_context([1, 2, 3], k=3) == [] and draft_from_context([1, 2, 1], k=0) == []


def _count_steps(model):
    calls = []
    handle = model.get_decoder().register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_lookup_writes_the_greedy_tokens_in_fewer_steps():
    lm = models.load("tiny-llama", dtype="float32")
    prompt = lm.tokenizer("the cat sat on the mat. the cat sat on the mat. the cat", return_tensors="pt")["input_ids"]
    context = prompt[0].tolist()
    runs = {}
    for k in (0, 8):
        calls, handle = _count_steps(lm.model)
        out = generate(lm.model, eos_ids={-7}, dec=Decoding(max_new_tokens=40, lookup_tokens=k),
                       input_ids=prompt, capture_hidden=True, context_ids=context)
        handle.remove()
        runs[k] = (out, len(calls))
    (plain, plain_steps), (looked, lookup_steps) = runs[0], runs[8]
    assert looked.token_ids == plain.token_ids and len(plain.token_ids[0]) == 40
    assert torch.allclose(looked.hidden[0], plain.hidden[0], atol=1e-4)
    assert plain_steps == 40 and lookup_steps < 40  # drafts were accepted
    # The cache ends just before the last token, as without lookup (it is fed next).
    assert looked.past_key_values.get_seq_length() == plain.past_key_values.get_seq_length() == prompt.shape[1] + 39

    # An EOS inside an accepted draft ends the reply there.
    eos = plain.token_ids[0][25]
    stop = plain.token_ids[0].index(eos) + 1
    cut = generate(lm.model, eos_ids={eos}, dec=Decoding(max_new_tokens=40, lookup_tokens=8),
                   input_ids=prompt, context_ids=context)
    assert cut.token_ids[0] == plain.token_ids[0][:stop]
    assert cut.past_key_values.get_seq_length() == prompt.shape[1] + stop - 1


def test_receiver_turns_are_the_same_with_and_without_lookup():
    lm = models.load("tiny-llama", dtype="float32")
    replies = {}
    for k in (0, 6):
        agent = ReceiverAgent(lm, Decoding(max_new_tokens=12, lookup_tokens=k))
        agent.begin("Your task is to: put a mug in the coffeemachine.", Message(kind="text", text="find the mug"),
                    Sample("t1", "task"))
        replies[k] = [agent.respond()] + [agent.respond(f"Observation: you see a mug {i}.") for i in range(4)]
        histories = replies.setdefault("history", [])
        histories.append(agent.history)
    assert replies[0] == replies[6]
    assert torch.allclose(*replies["history"], atol=1e-6)
