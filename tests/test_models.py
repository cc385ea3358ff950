"""The offline SmolLM2 conversion must give an ordinary, savable model."""

import json

import pytest

from interlat_bench.harness.core import models


@pytest.mark.slow
def test_converted_smollm2_is_plain_and_savable(tmp_path):
    folder = models.smollm2_folder()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # else a fine-tuned receiver cannot be saved
    lm = models.load("smollm2-135m", dtype="float32")
    assert lm.hidden_size == 576
    lm.model.save_pretrained(tmp_path / "copy")
    assert (tmp_path / "copy" / "config.json").exists()


def test_unknown_model_reference_is_a_usage_error():
    from interlat_bench.harness.core.errors import UnknownName

    with pytest.raises(UnknownName, match="unknown model"):
        models.load("no-such-model")
