from interlat_bench.harness.grid import expand
from interlat_bench.harness.runspec import KEY_VERSION, DecodingSpec, RunSpec


def spec(**kw):
    base = dict(method="text_zeroshot", benchmark="math", split="math500", receiver="smollm2-135m",
                sender="smollm2-135m", seed=0, method_params={"plan_tokens": 128})
    base.update(kw)
    return RunSpec.make(**base)


def test_golden_run_key():
    # Pinned: a change here silently orphans every recorded result. Bump KEY_VERSION instead.
    assert KEY_VERSION == 1
    assert spec().run_key == "9726c94e0c1b99b6"


def test_key_ignores_limit_and_param_order_but_not_outputs():
    assert spec(limit=10).run_key == spec(limit=20).run_key == spec().run_key
    a = RunSpec.make(method="m", benchmark="b", split="s", receiver="r", method_params={"x": 1, "y": 2})
    b = RunSpec.make(method="m", benchmark="b", split="s", receiver="r", method_params={"y": 2, "x": 1})
    assert a.run_key == b.run_key
    for change in (dict(seed=1), dict(dtype="bfloat16"), dict(split="test"), dict(receiver="tiny-llama"),
                   dict(method_params={"plan_tokens": 64}), dict(decoding=DecodingSpec(max_new_tokens=8)),
                   dict(decoding=DecodingSpec(greedy=False))):
        assert spec(**change).run_key != spec().run_key, change


def test_sampling_knobs_do_not_change_greedy_key():
    assert spec(decoding=DecodingSpec(temperature=0.1)).run_key == spec().run_key
    assert spec(decoding=DecodingSpec(greedy=False, temperature=0.1)).run_key != \
        spec(decoding=DecodingSpec(greedy=False, temperature=0.9)).run_key


def test_prompt_lookup_is_a_speed_setting_outside_the_key():
    assert spec(decoding=DecodingSpec(lookup_tokens=0)).run_key == spec().run_key


def test_grid_expansion():
    specs = expand(methods_csv="text_zeroshot,no_comm_zeroshot", tasks_csv="math", splits_csv="math500,test",
                   seeds=[0, 1], sender="s", receiver="r", limit=5)
    assert len(specs) == 2 * 2 * 2
    assert len({s.run_key for s in specs}) == 8
    no_comm = [s for s in specs if s.method == "no_comm_zeroshot"]
    assert all(s.sender is None for s in no_comm)  # a method without a sender does not key on it
    assert all(s.limit == 5 for s in specs)
    assert {s.split for s in specs} == {"math500", "test"}


def test_benchmark_defaults_method_overrides_and_cpu_sizes():
    import torch

    specs = {s.method: s for s in expand(methods_csv="oracle,latent", tasks_csv="alfworld", splits_csv="seen",
                                         sender="s", receiver="r")}
    assert dict(specs["oracle"].benchmark_params) == {"max_steps": 200}  # the expert's own cap
    assert dict(specs["latent"].benchmark_params) == {"max_steps": 20}   # SPEC section 7 default
    assert specs["oracle"].limit is None  # reference policies play every game
    # No model in the oracle's key: another --receiver, --dtype or reply length reuses its runs.
    assert specs["oracle"].receiver is None and specs["latent"].receiver == "r"
    other = expand(methods_csv="oracle,latent", tasks_csv="alfworld", splits_csv="seen", sender="s2",
                   receiver="r2", dtype="bfloat16", decoding=DecodingSpec(max_new_tokens=9))
    assert other[0].run_key == specs["oracle"].run_key and other[1].run_key != specs["latent"].run_key
    assert specs["latent"].limit == (None if torch.cuda.is_available() else 2)
    assert specs["latent"].decoding.max_new_tokens == 48
    explicit = expand(methods_csv="oracle", tasks_csv="alfworld", splits_csv="seen", sender="s", receiver="r",
                      limit=-1, benchmark_params={"alfworld": {"max_steps": 7}})
    assert dict(explicit[0].benchmark_params) == {"max_steps": 7} and explicit[0].limit is None
    both = expand(methods_csv="latent", tasks_csv="alfworld", sender="s", receiver="r", limit=2)
    assert [s.split for s in both] == ["seen", "unseen"] and both[0].limit == 2
