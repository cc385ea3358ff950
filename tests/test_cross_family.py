"""A cross-family pair: sender and receiver with different tokenizers, chat templates and widths.

tiny-llama (SmolLM2's tokenizer, hidden 64) and tiny-gemma3 (a tokenizer of its own, Gemma's
turns, hidden 80) stand in for SmolLM2-135M and Gemma-3-270m; the real pair runs the same code.
"""

import duckdb
import pytest
import torch
from typer.testing import CliRunner

from interlat_bench.harness.cli import app
from interlat_bench.harness.core import conversation as conv
from interlat_bench.harness.core import models
from interlat_bench.trainers.receiver import row_targets

PLAN = "Go to drawer 3, take the key 1 and put it on shelf 2. The code is 4170."


@pytest.fixture(scope="module")
def toks():
    return models.tokenizer("tiny-llama"), models.tokenizer("tiny-gemma3")


def test_the_tiny_pair_really_differs(toks):
    smol, gemma = toks
    assert smol.get_vocab() != gemma.get_vocab() and len(gemma) < len(smol)
    assert smol(PLAN, add_special_tokens=False).input_ids != gemma(PLAN, add_special_tokens=False).input_ids
    assert gemma.decode(gemma(PLAN, add_special_tokens=False).input_ids) == PLAN  # byte-level: lossless
    # Each side closes a reply with its own template's token; that token is where training stops.
    assert gemma.convert_ids_to_tokens(conv.turn_end_id(gemma)) == "<end_of_turn>"
    assert smol.convert_ids_to_tokens(conv.turn_end_id(smol)) == "<|im_end|>"
    enc = conv.encode(gemma, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go"}],
                      add_generation_prompt=False)
    supervised = [t for t, s in zip(enc.after, enc.labels_after) if s]
    assert gemma.decode(supervised) == "go<end_of_turn>"


def test_row_targets_match_each_sender_token_to_the_receiver_token_at_its_characters(toks):
    smol, gemma = toks
    ids = smol(PLAN, add_special_tokens=False).input_ids
    assert row_targets(smol, PLAN, ids, len(ids)) == ids  # same tokenizer: the ids themselves
    targets = row_targets(gemma, PLAN, ids, len(ids), sender_tokenizer=smol)
    assert targets is not None and len(targets) == len(ids)
    enc = gemma(PLAN, add_special_tokens=False, return_offsets_mapping=True)
    for i, target in enumerate(targets):
        start = len(smol.decode(ids[:i]))  # the sender token's first character
        j = next(j for j, (b, e) in enumerate(enc["offset_mapping"]) if b <= start < e)
        assert target == enc["input_ids"][j], (i, smol.decode(ids[i: i + 1]))
    # Rows that do not belong to this plan are not matched.
    assert row_targets(gemma, PLAN, ids, len(ids) + 1, sender_tokenizer=smol) is None
    assert row_targets(gemma, "another text", ids, len(ids), sender_tokenizer=smol) is None


@pytest.mark.slow
@pytest.mark.parametrize("sender,receiver,widths", [("tiny-llama", "tiny-gemma3", (64, 80)),
                                                    ("tiny-gemma3", "tiny-llama", (80, 64))])
def test_cross_family_pair_runs_end_to_end(results_env, sender, receiver, widths):
    out = CliRunner().invoke(app, [
        "run", "-m", "latent,text,no_comm", "-t", "probe", "--limit", "3", "--sender", sender,
        "--receiver", receiver, "--max-new-tokens", "3", "--param", "plan_tokens=6", "--param", "n_train=6",
        "--no-leaderboard"])
    assert out.exit_code == 0, out.output
    from interlat_bench.benchmarks.probe import ProbeBenchmark

    steps = ProbeBenchmark.train_overrides["adapter_warmup_steps"]
    assert f"adapter warm-up: {steps} steps on" in out.output  # rows matched across the tokenizers
    con = duckdb.connect(str(results_env), read_only=True)
    rows = con.execute("""select r.method, r.spec->>'sender', r.spec->>'receiver', count(*), count(s.error),
                          avg(try_cast(s.metrics->>'message_rows' as double))
                          from samples s join runs r using (run_key) group by all order by 1""").fetchall()
    con.close()
    by_method = {r[0]: r[1:] for r in rows}
    assert set(by_method) == {"latent", "text", "no_comm"}
    assert all(r[2] == 3 and r[3] == 0 for r in by_method.values())  # 3 samples each, no errors
    assert by_method["latent"][:2] == (sender, receiver)
    assert by_method["latent"][4] == 6  # one slot row per sender plan token

    from interlat_bench.trainers.checkpoint import load_receiver

    recv = load_receiver(_latent_checkpoint(results_env))
    assert (recv.adapter.sender_dim, recv.adapter.receiver_dim) == widths
    assert recv.adapter.has_input_projection
    assert recv.lm.model.get_input_embeddings().weight.shape[1] == widths[1]


def _latent_checkpoint(results_env):
    from interlat_bench.harness.core.settings import cache_dir

    folders = [p.parent for p in (cache_dir() / "receivers").glob("*/DONE")]
    latent = [f for f in folders if (f / "adapter").exists()]
    assert len(latent) == 1, folders
    return latent[0]


def test_text_slot_reads_the_plan_in_the_receivers_own_tokens(toks):
    from interlat_bench.benchmarks.probe import ProbeBenchmark
    from interlat_bench.methods.base import Message, MessageKind
    from interlat_bench.trainers.config import TrainConfig
    from interlat_bench.trainers.receiver import build_examples

    smol, gemma = toks
    sample = ProbeBenchmark({}).train_samples(limit=1)[0]
    ids = smol(PLAN, add_special_tokens=False).input_ids
    msg = Message(kind=MessageKind.LATENT, text=PLAN, token_ids=ids, latents=torch.zeros(len(ids), 64))
    cfg = TrainConfig(max_len=64)
    text_ex = build_examples(gemma, [sample], {sample.id: msg}, "text", cfg)[0]
    assert text_ex.plan_ids == gemma(PLAN, add_special_tokens=False).input_ids != ids
    latent_ex = build_examples(gemma, [sample], {sample.id: msg}, "latent", cfg, sender_tokenizer=smol)[0]
    assert latent_ex.latents.shape == (len(ids), 64)
    assert latent_ex.row_tokens == row_targets(gemma, PLAN, ids, len(ids), sender_tokenizer=smol)
