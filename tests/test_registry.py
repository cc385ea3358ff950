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
