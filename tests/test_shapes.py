"""Shape models (``shape:NAME``, ``shape:PATH/config.json``): published architectures with random
weights, generating to their budget; their runs are timing-only, out of quality tables."""

from __future__ import annotations

import json

import pytest
import torch

from interlat_bench.harness.core import models, shapes
from interlat_bench.harness.core.errors import UserError

TINY_SHAPE = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50000, "tie_word_embeddings": False}


@pytest.fixture
def tiny_shape(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_SHAPE))
    return f"shape:{path}"


@pytest.mark.parametrize("name, billions", [("qwen2.5-7b", 7.62), ("llama-3.1-8b", 8.03), ("qwen2.5-0.5b", 0.49)])
def test_named_shapes_have_the_published_parameter_counts(name, billions):
    """The architecture numbers give the published sizes (Qwen2.5-7B 7.62B, Llama-3.1-8B 8.03B,
    Qwen2.5-0.5B 0.49B parameters), counted on the meta device (``models.size``: no memory)."""
    assert round(models.size(f"shape:{name}").parameters / 1e9, 2) == billions


def test_the_smollm2_shape_is_the_offline_models_architecture():
    """shape:smollm2-135m has exactly the parameters and width of the converted SmolLM2 (counted
    on its weights: models.BUILTIN_SIZES), so costs measured on it need no scaling."""
    lm = models.load("smollm2-135m", "float32")
    counted = models.Size(sum(p.numel() for p in lm.model.parameters()), lm.hidden_size)
    assert models.size("shape:smollm2-135m") == models.BUILTIN_SIZES["smollm2-135m"] == counted


def test_a_shape_model_is_random_seeded_and_generates_to_its_budget(tiny_shape):
    from interlat_bench.harness.core.generation import Decoding, eos_ids, generate
    from interlat_bench.harness.core.models import load

    lm, again, other = load(tiny_shape, "float32"), load(tiny_shape, "float32"), load(tiny_shape, "float32", seed=1)
    assert lm.model.config.vocab_size == 50000 and lm.model.config.num_hidden_layers == 2
    weights = lm.model.get_input_embeddings().weight
    assert torch.equal(weights, again.model.get_input_embeddings().weight)
    assert not torch.equal(weights, other.model.get_input_embeddings().weight)
    assert lm.stop_ids == set()
    # Even a reply that would stop at once runs on: the end-of-turn token means nothing here.
    eos = torch.tensor([lm.tokenizer.eos_token_id])
    lm.model.lm_head.register_forward_hook(lambda module, args, out: out.index_fill(-1, eos, 1e4))
    ids = torch.tensor([[1, 2, 3]])
    lengths = [len(generate(lm.model, eos_ids=stop, dec=Decoding(greedy=True, max_new_tokens=7), input_ids=ids,
                            attention_mask=torch.ones_like(ids)).token_ids[0]) for stop in (lm.stop_ids, eos_ids(lm.tokenizer))]
    assert lengths == [7, 1]  # a real model's stop set would end it at once


@pytest.mark.parametrize("ref, says", [("shape:nope", "expected shape:NAME"), ("shape:/no/such/config.json", "cannot read"),
                                       ("shape:{bad}", "no 'model_type'")])
def test_bad_shape_references_are_one_line_errors(tmp_path, ref, says):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(UserError, match=says):
        shapes.architecture(ref.replace("{bad}", str(bad)))


def test_shape_runs_are_timing_only_out_of_quality_tables_and_in_latency(results_env, tiny_shape, tmp_path):
    import duckdb
    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app
    from interlat_bench.results import leaderboard as lb
    from interlat_bench.results import report

    common = ["-m", "text_zeroshot", "-t", "probe", "--limit", "2", "--max-new-tokens", "5", "--no-leaderboard"]
    for model in (tiny_shape, "tiny-llama"):
        result = CliRunner().invoke(app, ["run", *common, "--sender", model, "--receiver", model])
        assert result.exit_code == 0, result.output
    with duckdb.connect(str(results_env), read_only=True) as db:
        runs = dict(db.execute("select sender_model, timing_only from runs").fetchall())
        cut = db.execute("""select min((metrics->>'truncated_replies')::int) from samples join runs using (run_key)
                            where timing_only""").fetchone()[0]
    assert runs == {tiny_shape: True, "tiny-llama": False}
    assert cut == 1  # every reply ran to the token budget
    board = lb.leaderboard(results_env)
    assert [row[0] for row in board.rows] == ["text_zeroshot"] and all("shape" not in str(r) for r in board.rows)
    latency = report.latency_frame(results_env)
    assert latency["row"].str.contains("shape:").any() and len(latency) == 2
