import pytest

from interlat_bench.harness.core.errors import UnknownName
from interlat_bench.harness.core.registry import Registry, benchmarks, methods
from interlat_bench.methods.base import Method


def test_builtins_registered():
    assert {"no_comm_zeroshot", "text_zeroshot"} <= set(methods.names())
    assert "math" in benchmarks.names()


def test_unknown_name_suggests():
    with pytest.raises(UnknownName, match="did you mean 'text_zeroshot'") as e:
        methods.get("text_zeroshto")
    assert e.value.exit_code == 2


def test_decorator_and_conflicts():
    reg = Registry("method", "interlat_bench.tests.none", ())

    @reg.register
    class Mine(Method):
        name = "mine"

    assert reg.get("mine") is Mine
    with pytest.raises(ValueError, match="taken"):
        reg.register(type("Other", (Method,), {"name": "mine"}))
    with pytest.raises(TypeError):
        reg.register(type("Nameless", (), {}))


def test_entry_point_classes_are_loaded(monkeypatch):
    class EP:
        name = "x"

        def load(self):
            return type("Plugin", (Method,), {"name": "plugin_method"})

    import interlat_bench.harness.core.registry as r

    monkeypatch.setattr(r, "entry_points", lambda group: [EP()] if group == "g" else [])
    reg = Registry("method", "g", ())
    assert reg.names() == ["plugin_method"]


PLUGIN = '''
from interlat_bench.methods.zeroshot import NoCommZeroShot


class Whisper(NoCommZeroShot):
    """A method kept in a file of its own, not packaged."""

    name = "whisper"
    description = "untrained receiver, defined in a plugin file"
    defaults = {"volume": 2}
'''


def test_method_path_runs_a_method_from_a_file_or_a_module_with_its_params_in_the_run_key(
        results_env, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from interlat_bench.harness.cli import app

    monkeypatch.setenv("INTERLAT_METHODS", "")  # restored after the test: later workers do not see it
    (tmp_path / "whisper_plugin.py").write_text(PLUGIN)
    (tmp_path / "murmur_plugin.py").write_text(PLUGIN.replace("Whisper", "Murmur").replace('"whisper"', '"murmur"'))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(app, ["ls", "whisper", "--method-path", "whisper_plugin.py:Whisper"])
    assert shown.exit_code == 0, shown.output
    assert "untrained receiver, defined in a plugin file" in shown.output and "volume" in shown.output
    for ref, name in (("whisper_plugin.py:Whisper", "whisper"), ("murmur_plugin:Murmur", "murmur")):
        ran = runner.invoke(app, ["run", "--method-path", ref, "-m", name, "-t", "probe", "--limit", "2",
                                  "--receiver", "tiny-llama", "--max-new-tokens", "4", "-p", "volume=5",
                                  "--no-leaderboard"])
        assert ran.exit_code == 0, ran.output
    out = runner.invoke(app, ["sql", "select method, spec->>'$.method_params.volume' as volume, count(*) as n "
                              "from runs join samples using (run_key) group by all order by 1", "-f", "json"])
    assert json.loads(out.stdout) == [{"method": m, "volume": "5", "n": 2} for m in ("murmur", "whisper")]
    for ref, says in (("nowhere.py:Whisper", "no such file nowhere.py"),
                      ("whisper_plugin.py:Shout", "whisper_plugin.py has no class Shout"),
                      ("no_such_module:Whisper", "cannot import no_such_module"),
                      ("whisper_plugin", "expected package.module:Class")):
        bad = runner.invoke(app, ["ls", "--method-path", ref])
        assert bad.exit_code != 0 and f"--method-path {ref}: " in bad.output and says in bad.output, bad.output
