"""The training-free families (LatentMAS, KVComm, CIPHER, activation communication): each piece
checked against what it must equal, on tiny models and SmolLM2 in float32."""

from __future__ import annotations

import pytest
import torch

from interlat_bench.benchmarks.base import Sample
from interlat_bench.collectors import activation, cipher, kv, kv_share, latentmas
from interlat_bench.collectors.messages import prompt_ids
from interlat_bench.harness.core.generation import Decoding, eos_ids, extend_logits, generate
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.harness.core.models import load
from interlat_bench.harness.core.prompts import PROBE_PLAN_PROMPT
from interlat_bench.methods.agents import ReceiverAgent
from interlat_bench.methods.prefix_agents import ActivationAgent, KVPrefixAgent, prefix_cache

TASK = "Find the key. The key is in the blue box. The coin is in the red box."
QUESTION = "Find the key. It is in one of these boxes: red, blue, green. Which box holds the key?"
SAMPLE = Sample("probe/test/00000", TASK, {})
GREEDY = Decoding(greedy=True, max_new_tokens=6)


@pytest.fixture(scope="module", params=["tiny-llama", "smollm2-135m"])
def lm(request):
    return load(request.param, "float32")


@pytest.fixture(scope="module")
def tiny():
    return load("tiny-llama", "float32")


def _embed(lm, ids):
    return lm.model.get_input_embeddings()(torch.tensor(ids))


def _kv_message(lm, steps=0, latent_only=False, realign="matrix"):
    return latentmas.send(lm, [(SAMPLE.id, TASK)], prompt_template=PROBE_PLAN_PROMPT, latent_steps=steps,
                          realign_mode=realign, latent_only=latent_only)[SAMPLE.id]


@torch.no_grad()
def test_receiver_on_the_prompt_kv_equals_one_pass_over_prompt_and_question(lm):
    """The KV prefix path (pack, ship, rebuild, continue at the following positions) is exactly
    one forward over the sender's prompt followed by the receiver's prompt."""
    message = _kv_message(lm, steps=0)
    agent = KVPrefixAgent(lm, GREEDY)
    agent._open(QUESTION, message, SAMPLE)
    _, on_prefix = extend_logits(lm.model, agent.pending, agent.past)
    sender = _embed(lm, prompt_ids(lm.tokenizer, PROBE_PLAN_PROMPT, TASK))
    _, one_pass = extend_logits(lm.model, torch.cat([sender, agent.pending]), None)
    # Next-token probabilities (log-probabilities of 30 layers differ by float rounding ~1e-4 at -20)
    assert torch.allclose(on_prefix.exp(), one_pass[len(sender):].exp(), atol=1e-5, rtol=0)
    assert torch.equal(on_prefix.argmax(-1), one_pass[len(sender):].argmax(-1))


def test_zero_latent_steps_ship_the_prompts_kv(tiny):
    """latent_steps=0 still ships the prompt's cache (LatentMAS drops it there, #13)."""
    prompt = prompt_ids(tiny.tokenizer, PROBE_PLAN_PROMPT, TASK)
    message = _kv_message(tiny, steps=0)
    assert message.kind is MessageKind.KV and message.rows == len(prompt)
    cache = kv.new_cache(tiny.model)
    kv.forward(tiny.model, cache, ids=prompt)
    for (k, v), layer in zip(message.kv, cache.layers, strict=True):
        assert torch.equal(k, layer.keys[0]) and torch.equal(v, layer.values[0])
    assert message.nbytes == len(message.wire_bytes()) == sum(t.numel() * 4 for pair in message.kv for t in pair)


def test_latent_steps_add_positions_and_latent_only_ships_just_them(tiny):
    prompt = prompt_ids(tiny.tokenizer, PROBE_PLAN_PROMPT, TASK)
    full, only = _kv_message(tiny, steps=3), _kv_message(tiny, steps=3, latent_only=True)
    assert full.rows == len(prompt) + 3 and only.rows == 3
    assert all(torch.equal(k[:, -3:], k_only) for (k, _), (k_only, _) in zip(full.kv, only.kv, strict=True))


def test_realignment_matrix_is_the_ridge_solution_on_untied_embeddings():
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  num_key_value_heads=2, intermediate_size=32, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    w_in, w_out = model.get_input_embeddings().weight.double(), model.get_output_embeddings().weight.double()
    assert not torch.equal(w_in, w_out)
    expected = torch.linalg.inv(w_out.T @ w_out + 1e-5 * torch.eye(16, dtype=torch.float64)) @ w_out.T @ w_in
    w, target = latentmas.realignment(model, "matrix")
    assert torch.allclose(w.double(), expected, atol=1e-4)
    assert torch.isclose(target.double(), w_in.norm(dim=1).mean(), atol=1e-5)
    eye, _ = latentmas.realignment(model, "identity")
    assert torch.equal(eye, torch.eye(16))
    h = torch.randn(3, 16)
    assert torch.allclose(latentmas.realign(h, w, target).norm(dim=-1), target.expand(3), atol=1e-4)


@torch.no_grad()
def test_cipher_at_temperature_zero_is_the_text_path(lm):
    """A one-hot distribution makes every row the embedding of the greedy token: the receiver
    reads the greedy plan's own tokens where `text_zeroshot` reads the plan (the same token ids,
    not the plan re-tokenised after the intro's colon)."""
    prompt = prompt_ids(lm.tokenizer, PROBE_PLAN_PROMPT, TASK)
    stop = eos_ids(lm.tokenizer)
    rows = cipher.write(lm.model, prompt, max_new_tokens=12, temperature=0, stop=stop)
    out = generate(lm.model, eos_ids=stop, dec=Decoding(greedy=True, max_new_tokens=12),
                   input_ids=torch.tensor([prompt]))
    ids = [t for t in out.token_ids[0] if t not in stop]
    assert len(rows) == len(ids) > 0 and torch.equal(rows, _embed(lm, ids))
    agent = ReceiverAgent(lm, GREEDY)
    agent._open(QUESTION, Message(kind=MessageKind.EMBEDDINGS, latents=rows), SAMPLE)
    at = agent.history_ids.index(-1)
    tokens = agent.history_ids[:at] + ids + agent.history_ids[at + len(ids):]
    assert agent.history_ids[at:at + len(ids)] == [-1] * len(ids) and -1 not in tokens
    assert torch.equal(agent.pending, _embed(lm, tokens))
    plan_text = lm.tokenizer.decode(ids)
    assert plan_text in lm.tokenizer.decode(tokens)  # where text_zeroshot writes it, after the intro


def test_expected_embedding_is_the_probability_weighted_row():
    table = torch.randn(5, 3)
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5])
    p = torch.softmax(logits / 0.7, dim=-1)
    assert torch.allclose(cipher.expected_embedding(logits, table, 0.7), p @ table, atol=1e-6)
    assert torch.equal(cipher.expected_embedding(logits, table, 0), table[2])


@torch.no_grad()
def test_activation_grafted_at_its_own_layer_on_identical_inputs_changes_nothing(tiny):
    """k = j, replace, the sender reading what the receiver reads: the graft puts back the very
    state that was there. Grafting another layer's state does change the reply's logits."""
    lm = tiny
    agent = ActivationAgent(lm, GREEDY, j=1, op="replace")
    agent._open(QUESTION, Message(), SAMPLE)
    plain = extend_logits(lm.model, agent.pending, None)[1]
    ids = agent.history_ids
    for k, same in ((1, True), (0, False)):
        sent = activation.read(lm.model, ids, k)
        agent._open(QUESTION, Message(kind=MessageKind.ACTIVATION, latents=sent[None], layers=(k,)), SAMPLE)
        with agent._hooks():
            grafted = extend_logits(lm.model, agent.pending, None)[1]
        assert torch.allclose(grafted, plain, atol=1e-6) is same, k


def test_graft_operations():
    from interlat_bench.methods.prefix_agents import graft

    own, sent = torch.tensor([1.0, 3.0]), torch.tensor([3.0, 5.0])
    assert torch.equal(graft(own, sent, "replace"), sent)
    assert torch.equal(graft(own, sent, "sum"), own + sent)
    assert torch.equal(graft(own, sent, "mean"), torch.tensor([2.0, 4.0]))


@torch.no_grad()
def test_layers_sent_sink_only_never_read_their_padding(tiny):
    """kv_share first:1: the other layer keeps its first position; the zeros standing for the rest
    are masked, so any values there give the same logits, and the layer sent whole is read."""
    lm = tiny
    message = kv_share.send(lm, [(SAMPLE.id, TASK)], prompt_template=PROBE_PLAN_PROMPT, layers="first:1")[SAMPLE.id]
    (k0, _), (k1, v1) = message.kv
    assert message.layers == (0,) and k1.shape[1] == 1 and k0.shape[1] == message.rows
    assert message.nbytes == sum(t.numel() * 4 for pair in message.kv for t in pair)

    def logits(fill):
        agent = KVPrefixAgent(lm, GREEDY)
        agent._open(QUESTION, message, SAMPLE)
        if fill is not None:
            layer = agent.past.layers[1]
            layer.keys[..., 1:, :], layer.values[..., 1:, :] = fill, fill
        with agent._hooks():
            return extend_logits(lm.model, agent.pending, agent.past)[1]

    assert torch.allclose(logits(None), logits(torch.randn(())), atol=1e-6)
    _, blocked = prefix_cache(lm.model, message)
    assert blocked == {1: (1, message.rows)}
    agent = KVPrefixAgent(lm, GREEDY)
    agent._open(QUESTION, message, SAMPLE)
    unmasked = extend_logits(lm.model, agent.pending, agent.past)[1]
    assert not torch.allclose(unmasked, logits(None), atol=1e-4)  # the mask is what keeps the zeros out


@torch.no_grad()
def test_the_shape_controls_destroy_every_kv_layer_their_own_way(tiny):
    """gaussian: rows drawn anew within each matrix's affine span (mean plus the span of its
    centred rows), no row kept; truncate: the first ceil(L/2) positions of every layer;
    randomrot: the same shape, rows changed. Sink-only layers (one position) stay as sent."""
    from interlat_bench.methods import kv_share as kv_share_method

    message = kv_share.send(tiny, [(SAMPLE.id, TASK)], prompt_template=PROBE_PLAN_PROMPT, layers="last:1")[SAMPLE.id]
    n = message.rows

    def controlled(control):
        method = kv_share_method.KVShare({"control": control, "layers": "last:1"})
        return method.transform(message, torch.Generator().manual_seed(0))

    truncated, drawn, rotated = controlled("truncate"), controlled("gaussian"), controlled("randomrot")
    assert truncated.rows == (n + 1) // 2
    for (k, v), (tk, tv), (gk, gv), (rk, rv) in zip(message.kv, truncated.kv, drawn.kv, rotated.kv, strict=True):
        for sent, cut, new, turned in ((k, tk, gk, rk), (v, tv, gv, rv)):
            assert new.shape == turned.shape == sent.shape
            if sent.shape[1] == 1:  # the sink of a layer not sent whole
                assert torch.equal(cut, sent) and torch.allclose(new, sent)
                continue
            assert torch.equal(cut, sent[:, :(n + 1) // 2])
            flat, flat_new = (t.transpose(0, 1).reshape(t.shape[1], -1).double() for t in (sent, new))
            mu = flat.mean(0)
            basis = torch.linalg.svd(flat - mu, full_matrices=False).Vh  # the span of the centred rows
            inside = (flat_new - mu) @ basis.T @ basis
            assert torch.allclose(inside, flat_new - mu, atol=1e-4)
            assert not torch.isclose(flat_new, flat, atol=1e-3).all(-1).any()  # no row survives
            assert not torch.allclose(turned, sent, atol=1e-3)


def test_chosen_layers():
    assert kv_share.chosen_layers("all", 4) == (0, 1, 2, 3)
    assert kv_share.chosen_layers("first:2", 4) == (0, 1)
    assert kv_share.chosen_layers("last:1", 4) == (3,)
    with pytest.raises(ValueError):
        kv_share.chosen_layers("last:5", 4)


def test_top_layers_rank_by_attention():
    from interlat_bench.methods.kv_share import top_layers

    attention = [0.1, 0.5, 0.2, 0.4, 0.3]
    assert top_layers(attention, 0.4) == (1, 3)
    assert top_layers(attention, 0.3) == (1,)  # floor(1.5)
    assert top_layers(attention, 0.1) == (1,)  # at least one layer
    assert top_layers(attention, 1.0) == (0, 1, 2, 3, 4)


@torch.no_grad()
def test_prefix_attention_is_the_one_pass_attention_on_the_senders_positions(lm):
    """KVComm's layer importance read on the KV prefix equals the same attention read in one
    eager pass over the sender's prompt followed by the receiver's: per layer, the receiver's
    tokens' attention on the sender's positions after the first, summed, averaged over heads and tokens."""
    message = kv_share.send(lm, [(SAMPLE.id, TASK)], prompt_template=PROBE_PLAN_PROMPT, layers="all")[SAMPLE.id]
    agent = KVPrefixAgent(lm, GREEDY)
    importance = agent.prefix_attention(QUESTION, message, SAMPLE)
    sender = _embed(lm, prompt_ids(lm.tokenizer, PROBE_PLAN_PROMPT, TASK))
    n, previous = len(sender), lm.model.config._attn_implementation
    lm.model.set_attn_implementation("eager")
    try:
        out = lm.model(inputs_embeds=torch.cat([sender, agent.pending])[None], output_attentions=True)
    finally:
        lm.model.set_attn_implementation(previous)
    expected = torch.stack([a[0, :, n:, 1:n].sum(-1).mean() for a in out.attentions])
    assert importance.shape == (len(kv.decoder_layers(lm.model)),)
    assert torch.allclose(importance, expected, atol=1e-5)
    assert (importance > 0).all() and (importance < 1).all()


def test_every_family_runs_end_to_end_and_records_what_crossed(results_env):
    """`run` on the probe with tiny models: each family and its controls record one row per
    configuration, with the bytes and layers of what was shipped."""
    import duckdb
    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app

    tiny = ["-t", "probe", "--limit", "4", "--sender", "tiny-llama", "--receiver", "tiny-llama", "--no-leaderboard"]
    for args in (["-m", "latentmas", "--param", "latent_steps=2", "--param",
                  'control=["none","cross_task","randomrot","gaussian","truncate"]'],
                 ["-m", "latentmas", "--param", "latent_steps=2", "--param", "latent_only=true"],
                 ["-m", "kv_share", "--param", 'layers=["all","last:1","top:0.5"]'],
                 ["-m", "cipher,activation", "--param", "k=1", "--param", "j=1"]):
        result = CliRunner().invoke(app, ["run", *args, *tiny])
        assert result.exit_code == 0, result.output
    with duckdb.connect(str(results_env), read_only=True) as db:
        rows = db.execute("""select method, count(*), count(distinct run_key),
                                    min((metrics->>'message_bytes')::int), max((metrics->>'message_layers')::int)
                             from samples join runs using (run_key) group by method order by method""").fetchall()
        top = db.execute("""select distinct (metrics->>'message_layers')::int from samples join runs using (run_key)
                            where method = 'kv_share' and spec->'method_params'->>'layers' = 'top:0.5'""").fetchall()
    assert top == [(1,)]  # calibrated: one of tiny-llama's 2 layers
    by = {r[0]: r[1:] for r in rows}
    assert by["latentmas"][:2] == (24, 6) and by["kv_share"][:2] == (12, 3)
    assert by["cipher"][0] == 4 and by["activation"][0] == 4
    assert by["latentmas"][3] == 2 and by["activation"][3] == 1  # tiny-llama has 2 layers; k = one layer
    hidden = 64
    assert by["activation"][2] == hidden * 4  # one float32 row


@torch.no_grad()
def test_the_graft_lands_on_the_prompts_last_token_when_replies_are_ranked(tiny):
    """Ranking feeds the prompt and the replies' shared start in one forward: the graft must
    still land on the prompt's last token, as when the prompt is fed alone and the rest follows."""
    lm = tiny
    sent = activation.read(lm.model, prompt_ids(lm.tokenizer, PROBE_PLAN_PROMPT, TASK), 0)
    message = Message(kind=MessageKind.ACTIVATION, latents=sent[None], layers=(0,))
    shared = _embed(lm, lm.tokenizer("The key is in the", add_special_tokens=False).input_ids)
    agent = ActivationAgent(lm, GREEDY, j=1, op="sum")
    agent._open(QUESTION, message, SAMPLE)
    with agent._hooks():
        cache, _ = extend_logits(lm.model, agent.pending, None)
    _, apart = extend_logits(lm.model, shared, cache)
    agent._open(QUESTION, message, SAMPLE)
    with agent._hooks():
        _, together = extend_logits(lm.model, torch.cat([agent.pending, shared]), None)
    assert torch.allclose(together[-len(shared):], apart, atol=1e-5)


@pytest.mark.parametrize("task, extra", [("math", ["--max-new-tokens", "8"]),
                                         ("alfworld", ["--splits", "unseen", "--max-steps", "2"])])
def test_the_families_play_math_and_alfworld(results_env, task, extra):
    """Beyond the probe: a MATH answer and multi-turn ALFWorld episodes (the KV prefix and the
    graft carried across turns) record a row per family, none failed."""
    import duckdb
    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app

    result = CliRunner().invoke(app, ["run", "-m", "latentmas,kv_share,cipher,activation", "-t", task, "--limit", "1",
                                      "--param", "latent_steps=1", "--param", "k=1", "--param", "j=1", "--param",
                                      "plan_tokens=4", "--sender", "tiny-llama", "--receiver", "tiny-llama",
                                      "--no-leaderboard", *extra])
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(results_env), read_only=True) as db:
        rows = db.execute("select method, count(*), count(error), max((metrics->>'replies')::int) "
                          "from samples join runs using (run_key) group by method order by method").fetchall()
    assert [r[0] for r in rows] == ["activation", "cipher", "kv_share", "latentmas"]
    assert all(n == 1 and errors == 0 and replies >= 1 for _, n, errors, replies in rows), rows


@torch.no_grad()
def test_a_batch_of_tasks_sends_what_each_task_sends_alone(tiny, monkeypatch):
    """Senders read kv.BATCH tasks at a time, left-padded: every task's message, padding cut
    off, is the one it gets alone (float32, 1e-5), for prompts of different lengths."""
    tasks = [(f"t{i}", TASK + " The ring is in the green box." * i) for i in range(3)]

    def each(send, **kw):
        together = send(tiny, tasks, prompt_template=PROBE_PLAN_PROMPT, **kw)
        monkeypatch.setattr(kv, "BATCH", 1)
        alone = send(tiny, tasks, prompt_template=PROBE_PLAN_PROMPT, **kw)
        monkeypatch.setattr(kv, "BATCH", 16)
        return [(together[t], alone[t]) for t, _ in tasks]

    for a, b in each(latentmas.send, latent_steps=3, realign_mode="matrix", latent_only=False):
        assert a.rows == b.rows and all(torch.allclose(x, y, atol=1e-5) for pa, pb in zip(a.kv, b.kv, strict=True)
                                        for x, y in zip(pa, pb, strict=True))
    for a, b in each(cipher.send, max_new_tokens=5, temperature=0.7):
        assert a.latents.shape == b.latents.shape and torch.allclose(a.latents, b.latents, atol=1e-5)
    for a, b in each(activation.send, k=1):
        assert torch.allclose(a.latents, b.latents, atol=1e-5)
    assert len({len(prompt_ids(tiny.tokenizer, PROBE_PLAN_PROMPT, t)) for _, t in tasks}) == 3
