"""lm-eval model ``interlat``: local lm-eval tasks answered by a tiny sender and a tiny trained
receiver, through ``lm_eval.simple_evaluate`` (offline: the tasks read jsonl files in tmp).

The receiver is trained (seconds) to answer every task with REPLY (it learns ANSWER + "."), so
the metrics have a known value: a broken prompt, slot or scoring path shows as a wrong number,
not just as a crash.
"""

import json
import math

import pytest
import torch

pytest.importorskip("lm_eval")  # the `math` extra

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from interlat_bench.harness.core import conversation as conv  # noqa: E402
from interlat_bench.harness.core.errors import UserError  # noqa: E402
from interlat_bench.harness.core.message import MessageKind  # noqa: E402
from interlat_bench.harness.lm_eval_model import InterlatLM  # noqa: E402

REPLY = "The code is 4170. Done."
ANSWER = "The code is 4170"
DOCS = [{"question": f"Task {i}: what is the code?", "answer": ANSWER, "label": i % 3,
         "choices": [ANSWER if k == i % 3 else f"The code is {k}{i}9{k}" for k in range(3)]}
        for i in (101, 102, 103)]
CHOICES = 3
TASKS = {
    "interlat_test_gen": {"output_type": "generate_until", "doc_to_target": "answer",
                          "generation_kwargs": {"until": ["."], "max_gen_toks": 12},
                          "metric_list": [{"metric": "exact_match"}]},
    "interlat_test_mc": {"output_type": "multiple_choice", "doc_to_choice": "choices",
                         "doc_to_target": "label", "metric_list": [{"metric": "acc"}]},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """As conftest's ``results_env`` (private cache and results, the shared converted models),
    for the whole module, so the receiver is trained once; plus the lm-eval task folder."""
    from interlat_bench.harness.core.settings import models_dir

    tmp = tmp_path_factory.mktemp("lm_eval")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERLAT_MODELS", str(models_dir()))
        mp.setenv("INTERLAT_CACHE", str(tmp / "cache"))
        mp.setenv("INTERLAT_RESULTS", str(tmp / "results"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        data = tmp / "docs.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
        (tmp / "tasks").mkdir()
        for name, cfg in TASKS.items():  # YAML is a superset of JSON
            (tmp / "tasks" / f"{name}.yaml").write_text(json.dumps({
                "task": name, "dataset_path": "json", "test_split": "test", "doc_to_text": "question",
                "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(tmp / "hf")}, **cfg}))
        yield {"tasks": tmp / "tasks", "checkpoint": train_tiny_receiver()}


def train_tiny_receiver():
    """A latent tiny-llama receiver trained on the tiny-llama sender's plans, as the runner's train
    stage does (collect_plans -> train_receiver), at a learning rate that makes it learn REPLY's
    start (about 10 s on 2 cores; the separation loss, off here, would triple it)."""
    from interlat_bench.benchmarks.base import Benchmark, Sample
    from interlat_bench.collectors.plans import collect_plans
    from interlat_bench.methods.sending import SENDER_DEFAULTS, plan_collection
    from interlat_bench.trainers.config import TrainConfig
    from interlat_bench.trainers.receiver import train_receiver

    tasks = [f"Task {i}: what is the code?" for i in range(8)]
    samples = [Sample(f"t{i}", task, {"conversation": [{"role": "user", "content": task},
                                                      {"role": "assistant", "content": REPLY}]})
               for i, task in enumerate(tasks)]
    bench = Benchmark()
    stage = plan_collection({**SENDER_DEFAULTS, "plan_tokens": 6}, bench, sender_model="tiny-llama", dtype="float32", seed=0)
    plans = collect_plans(stage, bench.sender_tasks(samples))
    cfg = TrainConfig(n_train=8, epochs=12, batch_size=8, lr=3e-3, adapter_lr=1e-3, max_len=48,
                      neg_weight=0.0)
    return train_receiver("tiny-llama", "latent", samples, plans, cfg, messages_key=plans.key,
                          log=lambda *_: None)


def evaluate(env, method: str, tasks: list[str], extra: str = ""):
    """simple_evaluate by model name and argument string (as the CLI does); returns the results
    and what the model received and answered: [(request type, model, request args, outputs)]."""
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("loglikelihood", "generate_until"):
            def spy(self, requests, *a, _name=name, _orig=getattr(InterlatLM, name), **kw):
                out = _orig(self, requests, *a, **kw)
                calls.append((_name, self, [r.args for r in requests], out))
                return out

            mp.setattr(InterlatLM, name, spy)
        results = simple_evaluate(
            model="interlat", tasks=tasks, batch_size=1, log_samples=True,
            model_args=f"method={method},receiver=tiny-llama,sender=tiny-llama,"
                       f"checkpoint={env['checkpoint']}{extra}",
            task_manager=TaskManager(include_path=str(env["tasks"]), include_defaults=False))
    return results, calls


@pytest.fixture(scope="module")
def latent(env):
    return evaluate(env, "latent", list(TASKS), ",plan_tokens=6")


def reference_loglikelihood(lm: InterlatLM, context: str, continuation: str) -> float:
    """log P(continuation | context) by one plain forward over the whole sequence, built here
    from the conversation pieces (no KV cache, no ReceiverAgent)."""
    rec = lm.receiver
    tok, model = rec.lm.tokenizer, rec.lm.model
    msg = lm.message(context)
    turns = conv.opening(context, conv.Layout.SLOT, message_kind=msg.kind)
    enc = conv.encode(tok, turns, add_generation_prompt=True)
    cont = conv.tokenize(tok, continuation.lstrip())
    bop, eop = tok.convert_tokens_to_ids([conv.BOP, conv.EOP])
    embed = model.get_input_embeddings()
    with torch.no_grad():
        rows = rec.slot(msg)  # None: an empty slot
        x = torch.cat([embed(torch.tensor(enc.before + [bop])), *([] if rows is None else [rows]),
                       embed(torch.tensor([eop] + enc.after + cont))])
        logits = model(inputs_embeds=x[None]).logits[0, -len(cont) - 1:-1].float()
    return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(cont)[:, None]).sum())


def test_registered_and_checks_its_arguments():
    assert get_model("interlat") is InterlatLM
    with pytest.raises(UserError, match="unknown model_args"):
        InterlatLM(receiver="tiny-llama", sender="tiny-llama", plan_token=6)
    with pytest.raises(UserError, match="checkpoint="):
        InterlatLM(receiver="tiny-llama", sender="tiny-llama")


def test_generate_until_answers_and_cuts_at_the_stop_string(latent):
    results, calls = latent
    assert results["results"]["interlat_test_gen"]["exact_match,none"] == 1.0
    [(_, lm, args, outputs)] = [c for c in calls if c[0] == "generate_until"]
    assert sorted(c for c, _ in args) == sorted(d["question"] for d in DOCS)
    assert all(kw["until"] == ["."] for _, kw in args)
    # The same requests without a stop string: the whole reply, which the stop string cut.
    full = lm.generate_until([Instance("generate_until", {}, (c, {"until": [], "max_gen_toks": 12}), 0)
                              for c, _ in args], disable_tqdm=True)
    for whole, cut in zip(full, outputs):
        assert whole.startswith(ANSWER + ".") and cut == whole[:whole.index(".")] == ANSWER


def test_generate_until_replies_are_the_same_in_batches(latent):
    _, calls = latent
    [(_, lm, args, _)] = [c for c in calls if c[0] == "generate_until"]
    requests = [Instance("generate_until", {}, (c, {"until": [], "max_gen_toks": 12}), 0) for c, _ in args]
    lm.batch_size = 1
    alone = lm.generate_until(requests, disable_tqdm=True)
    assert lm.agent.episode_metrics().get("eval_batch") is None
    lm.batch_size = len(requests)
    try:
        together = lm.generate_until(requests, disable_tqdm=True)
        assert lm.agent.episode_metrics()["eval_batch"] == len(requests)  # decoded in one batch
    finally:
        lm.batch_size = 1
    assert together == alone and all(r.startswith(ANSWER) for r in alone)


def test_multiple_choice_scores_every_choice_with_the_message(latent):
    results, calls = latent
    assert results["results"]["interlat_test_mc"]["acc,none"] == 1.0
    [(_, lm, args, outputs)] = [c for c in calls if c[0] == "loglikelihood"]
    assert len(args) == len(outputs) == len(DOCS) * CHOICES
    assert all(math.isfinite(lp) and lp < 0 for lp, _ in outputs)
    assert lm.message(args[0][0]).kind is MessageKind.LATENT and lm.message(args[0][0]).rows > 0
    for i in (0, len(args) - 1):
        assert outputs[i][0] == pytest.approx(reference_loglikelihood(lm, *args[i]), abs=1e-4)
    # is_greedy: the learned answer is the greedy reply; the others are not.
    greedy = {True: [], False: []}
    for (_, is_greedy), (_, cont) in zip(outputs, args):
        greedy[cont.strip() == ANSWER].append(is_greedy)
    assert greedy[True] == [True] * len(DOCS) and not any(greedy[False])
    with pytest.raises(UserError, match="rolling"):
        lm.loglikelihood_rolling([])


def test_the_message_changes_the_scores(env, latent):
    """The same receiver with an empty slot (no_comm): same requests, other log-likelihoods."""
    _, calls = evaluate(env, "no_comm", ["interlat_test_mc"])
    [(_, lm, args, outputs)] = [c for c in calls if c[0] == "loglikelihood"]
    [(_, _, latent_args, latent_outputs)] = [c for c in latent[1] if c[0] == "loglikelihood"]
    assert lm.message(args[0][0]).kind is MessageKind.NONE
    assert args == latent_args
    # The receiver learned to answer REPLY whatever the slot holds, so the scores move little
    # (1e-4 to 1e-1); an ignored slot moves them by float noise alone (~1e-6).
    diffs = [abs(a - b) for (a, _), (b, _) in zip(outputs, latent_outputs)]
    assert max(diffs) > 1e-3 and sum(d > 1e-5 for d in diffs) >= len(diffs) - 1
    assert outputs[0][0] == pytest.approx(reference_loglikelihood(lm, *args[0]), abs=1e-4)


def test_command_line_entry(env, tmp_path, capsys):
    """``main`` hands its arguments to lm-eval's own CLI with ``interlat`` registered (lm-eval
    indexes its built-in tasks first: about 10 s)."""
    from interlat_bench.harness.lm_eval_model import main

    main(["--model", "interlat",
          "--model_args", "method=no_comm,receiver=tiny-llama,sender=tiny-llama,"
                          f"checkpoint={env['checkpoint']}",
          "--tasks", "interlat_test_mc", "--include_path", str(env["tasks"]), "--output_path", str(tmp_path)])
    [saved] = tmp_path.rglob("results_*.json")
    result = json.loads(saved.read_text())
    assert result["results"]["interlat_test_mc"]["acc,none"] == 1.0
    assert result["config"]["model"] == "interlat" and result["config"]["interlat"]["method"] == "no_comm"
    assert "interlat_test_mc" in capsys.readouterr().out  # the metric table


@pytest.fixture(autouse=True)
def _lm_eval_logs_to_this_tests_stderr():
    """lm-eval's CLI sets its log handler up once, on the stderr of the test that first ran it
    (closed since): point it at this test's."""
    import logging
    import sys

    for handler in logging.getLogger("lm_eval").handlers:
        if type(handler) is logging.StreamHandler:  # not pytest's own capture handlers
            handler.stream = sys.stderr


def _main(argv, capsys):
    from interlat_bench.harness.lm_eval_model import main

    code = main(argv)
    said = capsys.readouterr()
    return code, said.out, said.err


def _interlat_args(env, method: str) -> str:
    return f"method={method},receiver=tiny-llama,sender=tiny-llama,checkpoint={env['checkpoint']}"


def test_each_configuration_gets_its_own_output_folder_device_and_batch_size(env, tmp_path, capsys):
    """As for lm-eval's hf model: --device is taken and recorded (not lm-eval's default cuda:0 on a
    machine without one), --batch_size auto:N within --max_batch_size, and a latent and a no_comm
    run are filed under different names."""
    from interlat_bench.harness.core import models

    common = ["--tasks", "interlat_test_mc", "--include_path", str(env["tasks"]), "--output_path", str(tmp_path)]
    try:
        code, _, err = _main(["--model", "interlat", "--model_args", _interlat_args(env, "latent") + ",plan_tokens=6",
                              "--device", "cpu", "--batch_size", "auto:4", "--max_batch_size", "2", *common], capsys)
        assert code == 0, err
        code, _, err = _main(["--model", "interlat", "--model_args", _interlat_args(env, "no_comm"), *common], capsys)
        assert code == 0, err
    finally:
        models.use_device(None)
    saved = {json.loads(p.read_text())["config"]["interlat"]["method"]: p for p in tmp_path.rglob("results_*.json")}
    assert set(saved) == {"latent", "no_comm"}
    assert saved["latent"].parent != saved["no_comm"].parent
    assert saved["latent"].parent.name.startswith("interlat_latent_tiny-llama-to-tiny-llama")
    latent, no_comm = (json.loads(saved[m].read_text())["config"] for m in ("latent", "no_comm"))
    assert latent["device"] == "cpu" and latent["interlat"]["device"] == "cpu"
    assert latent["interlat"]["batch_size"] == 2
    assert no_comm["device"] == no_comm["interlat"]["device"] == models.device()  # not cuda:0 without a GPU


@pytest.mark.parametrize("extra, names", [
    (["--apply_chat_template"], "--apply_chat_template is not supported"),
    (["--batch_size", "many"], "--batch_size 'many'"),
])
def test_what_interlat_cannot_take_is_refused_in_one_line(env, tmp_path, capsys, extra, names):
    code, _, err = _main(["--model", "interlat", "--model_args", _interlat_args(env, "no_comm"),
                          "--tasks", "interlat_test_mc", "--include_path", str(env["tasks"]), *extra], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and len(lines) == 1 and names in lines[0], err
    assert "Traceback" not in err


def test_an_unknown_model_arg_is_one_line_through_the_command(env):
    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app

    result = CliRunner().invoke(app, ["lm-eval", "--model", "interlat", "--model_args",
                                      _interlat_args(env, "latent") + ",nosuch=1", "--tasks", "interlat_test_mc",
                                      "--include_path", str(env["tasks"])])
    said = result.output + (result.stderr or "")
    assert result.exit_code == 1 and "unknown model_args ['nosuch']" in said
    assert "Traceback" not in said and not isinstance(result.exception, UserError)


def test_help_is_lm_evals_own():
    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app

    top = CliRunner().invoke(app, ["lm-eval", "--help"])
    assert top.exit_code == 0 and "--model interlat" in top.output and "COMMAND" in top.output
    run = CliRunner().invoke(app, ["lm-eval", "run", "--help"])
    assert run.exit_code == 0
    assert all(option in run.output for option in ("--model_args", "--max_batch_size", "--apply_chat_template"))


def test_use_device_takes_what_the_machine_has_and_falls_back_otherwise():
    import torch

    from interlat_bench.harness.core import models

    try:
        assert models.use_device("cpu") == "cpu" and not models.on_gpu()
        fallback = "cuda" if torch.cuda.is_available() else "cpu"
        assert models.use_device(f"cuda:{torch.cuda.device_count()}") == fallback  # one past the last GPU
        assert models.use_device("tpu") == fallback
    finally:
        models.use_device(None)
    assert models.device() == fallback
