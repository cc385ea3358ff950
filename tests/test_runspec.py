import os
import re

import pytest

from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.runspec import KEY_VERSION, DecodingSpec, RunSpec
from interlat_bench.harness.grid import expand


def spec(**kw):
    base = dict(method="text_zeroshot", benchmark="math", split="math500", receiver_model="smollm2-135m",
                sender_model="smollm2-135m", seed=0, method_params={"plan_tokens": 128}, data="0123456789abcdef")
    base.update(kw)
    return RunSpec.make(**base)


def test_golden_run_key():
    # Pinned: a change here silently orphans every recorded result. Bump KEY_VERSION instead.
    assert KEY_VERSION == 4
    assert spec().run_key == "3a61eac96c5fdea8"


def test_key_ignores_limit_and_param_order_but_not_outputs():
    assert spec(limit=10).run_key == spec(limit=20).run_key == spec().run_key
    a = RunSpec.make(method="m", benchmark="b", split="s", receiver_model="r", method_params={"x": 1, "y": 2})
    b = RunSpec.make(method="m", benchmark="b", split="s", receiver_model="r", method_params={"y": 2, "x": 1})
    assert a.run_key == b.run_key
    for change in (dict(seed=1), dict(dtype="bfloat16"), dict(split="test"), dict(receiver_model="tiny-llama"),
                   dict(method_params={"plan_tokens": 64}), dict(decoding=DecodingSpec(max_new_tokens=8)),
                   dict(decoding=DecodingSpec(greedy=False)), dict(data="fedcba9876543210"),
                   dict(training={"lr": 1e-4})):
        assert spec(**change).run_key != spec().run_key, change


def test_key_follows_what_a_training_preset_holds_not_its_name(monkeypatch):
    from dataclasses import replace

    from interlat_bench.trainers import config as receiver

    def key(method, **params):
        [cell] = expand(methods_csv=method, tasks_csv="alfworld", splits_csv="seen", seeds=[0], sender_model="s",
                        receiver_model="r", method_params=params)
        return cell

    before = key("no_comm", preset="cpu")
    assert dict(before.training) == receiver.PRESETS["cpu"].key_dict()  # ALFWorld sizes only the quick preset
    assert key("no_comm_zeroshot").training == ()  # trains no receiver
    monkeypatch.setitem(receiver.PRESETS, "cpu", replace(receiver.PRESETS["cpu"], detours=0))
    assert key("no_comm", preset="cpu").run_key != before.run_key


def test_sampling_knobs_do_not_change_greedy_key():
    assert spec(decoding=DecodingSpec(temperature=0.1)).run_key == spec().run_key
    assert spec(decoding=DecodingSpec(greedy=False, temperature=0.1)).run_key != \
        spec(decoding=DecodingSpec(greedy=False, temperature=0.9)).run_key


def test_prompt_lookup_is_a_speed_setting_outside_the_key():
    assert spec(decoding=DecodingSpec(lookup_tokens=0)).run_key == spec().run_key


def test_grid_expansion():
    specs = expand(methods_csv="text_zeroshot,no_comm_zeroshot", tasks_csv="math", splits_csv="math500,test",
                   seeds=[0, 1], sender_model="s", receiver_model="r", limit=5)
    assert len(specs) == 2 * 2 * 2
    assert len({s.run_key for s in specs}) == 8
    no_comm = [s for s in specs if s.method == "no_comm_zeroshot"]
    assert all(s.sender_model is None for s in no_comm)  # a method without a sender does not key on it
    assert all(s.limit == 5 for s in specs)
    assert {s.split for s in specs} == {"math500", "test"}


def test_sweeps_give_one_configuration_per_value():
    def rhos(**kw):
        specs = expand(methods_csv="truncate", tasks_csv="probe", sender_model="s", receiver_model="r", limit=4, **kw)
        return sorted(dict(s.method_params)["rho"] for s in specs)

    assert rhos() == [0.0, 0.5, 0.9]  # the method's sweep when rho is left unset
    assert rhos(method_params={"rho": 0.25}) == [0.25]
    assert rhos(method_params={"rho": [1.0, 0.1]}) == [0.1, 1.0]
    with pytest.raises(UserError, match="rho"):
        rhos(method_params={"rho": [0.5, 2]})
    with pytest.raises(UserError, match="at least one value"):
        rhos(method_params={"rho": []})


def test_benchmark_defaults_method_overrides_and_cpu_sizes():
    import torch

    specs = {s.method: s for s in expand(methods_csv="oracle,latent", tasks_csv="alfworld", splits_csv="seen",
                                         sender_model="s", receiver_model="r")}
    assert dict(specs["oracle"].benchmark_params) == {"max_steps": 200, "action": "generate"}  # the expert's cap
    assert dict(specs["latent"].benchmark_params) == {"max_steps": 20, "action": "generate"}  # SPEC section 7
    assert specs["oracle"].limit is None  # reference policies play every game
    # No model in the oracle's key: another --receiver, --dtype or reply length reuses its runs.
    assert specs["oracle"].receiver_model is None and specs["latent"].receiver_model == "r"
    other = expand(methods_csv="oracle,latent", tasks_csv="alfworld", splits_csv="seen", sender_model="s2",
                   receiver_model="r2", dtype="bfloat16", decoding=DecodingSpec(max_new_tokens=9))
    assert other[0].run_key == specs["oracle"].run_key and other[1].run_key != specs["latent"].run_key
    assert specs["latent"].limit == (None if torch.cuda.is_available() else 2)
    assert specs["latent"].decoding.max_new_tokens == 48
    explicit = expand(methods_csv="oracle", tasks_csv="alfworld", splits_csv="seen", sender_model="s", receiver_model="r",
                      limit=-1, benchmark_params={"alfworld": {"max_steps": 7}})
    assert dict(explicit[0].benchmark_params) == {"max_steps": 7, "action": "generate"} and explicit[0].limit is None
    both = expand(methods_csv="latent", tasks_csv="alfworld", sender_model="s", receiver_model="r", limit=2)
    assert [s.split for s in both] == ["seen", "unseen"] and both[0].limit == 2


REAL_MATH = os.environ["MATH_DATA"]  # set by conftest before tests are collected


def _copy_math(tmp_path, edit=None):
    import shutil

    out = tmp_path / "math"
    shutil.copytree(REAL_MATH, out)
    if edit:
        path = out / "math500_test.jsonl"
        lines = path.read_text().splitlines(keepends=True)
        lines[0] = edit(lines[0])
        path.write_text("".join(lines))
    return out


def test_key_carries_a_fingerprint_of_the_data_read(tmp_path, monkeypatch):
    def keys(methods="text_zeroshot,no_comm"):
        return {s.method: s.run_key for s in expand(methods_csv=methods, tasks_csv="math", sender_model="s",
                                                     receiver_model="r", limit=1)}

    real = keys()
    assert os.environ["MATH_DATA"] == REAL_MATH
    monkeypatch.setenv("MATH_DATA", str(_copy_math(tmp_path / "same")))
    assert keys() == real  # the same content elsewhere is the same run
    monkeypatch.setenv("MATH_DATA", str(_copy_math(tmp_path / "edited",
                                                   lambda line: line.replace('"answer"', '"answer_"'))))
    changed = keys()
    assert changed["text_zeroshot"] != real["text_zeroshot"] and changed["no_comm"] != real["no_comm"]
    # Trained receivers also read the training split: editing it is a new run for them only.
    train_dir = _copy_math(tmp_path / "train")
    (train_dir / "math_train.jsonl").write_text((train_dir / "math_train.jsonl").read_text()[:-200])
    monkeypatch.setenv("MATH_DATA", str(train_dir))
    trained = keys()
    assert trained["text_zeroshot"] == real["text_zeroshot"] and trained["no_comm"] != real["no_comm"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(limit=-5), "--limit -5"),
    (dict(limit=0), "--limit 0"),
    (dict(seeds=[-1]), "--seeds -1"),
    (dict(decoding=DecodingSpec(max_new_tokens=-1)), "--max-new-tokens -1"),
    (dict(decoding=DecodingSpec(greedy=False, temperature=0.0)), "--temperature 0.0"),
    (dict(method_params={"n_train": -3}), "n_train=-3"),
    (dict(method_params={"plan_tokens": -5}), "plan_tokens=-5"),
    (dict(method_params={"plan_tokens": 2.5}), "plan_tokens=2.5"),
    (dict(method_params={"curriculum": "sometimes"}), "curriculum='sometimes'"),
    (dict(method_params={"preset": "huge"}), "preset='huge'"),
    (dict(benchmark_params={"alfworld": {"max_steps": -3}}), "max_steps=-3"),
    (dict(benchmark_params={"alfworld": {"max_steps": 0}}), "max_steps=0"),
])
def test_numbers_that_cannot_be_right_are_refused(kwargs, message):
    from interlat_bench.harness.core.errors import UserError

    args = dict(methods_csv="latent", tasks_csv="alfworld", sender_model="s", receiver_model="r")
    args.update(kwargs)
    with pytest.raises(UserError, match=re.escape(message)):
        expand(**args)


def test_method_checks_name_the_presets_and_curricula_that_exist():
    from interlat_bench.methods.interlat import TRAIN_CHECKS
    from interlat_bench.trainers.config import PRESETS
    from interlat_bench.trainers.curriculum import MODES

    assert all(TRAIN_CHECKS["preset"].test(p) for p in PRESETS)
    assert all(TRAIN_CHECKS["curriculum"].test(m) for m in MODES)
    assert not TRAIN_CHECKS["preset"].test("none") and not TRAIN_CHECKS["curriculum"].test("none")
