"""The latent-step loop: each step's input is h2e of the previous step's last-layer state."""

from __future__ import annotations

import torch

from interlat_bench.collectors.latent_steps import LatentStepHead, latent_steps
from interlat_bench.harness.core.models import load


def manual(model, head, prompt: list[int], k: int) -> torch.Tensor:
    """The definition, without a cache: re-encode prompt + every input so far at each step."""
    embed = model.get_input_embeddings()
    inputs = [embed(torch.tensor(prompt, device=embed.weight.device)), head.lat_bos[None]]
    rows = []
    for _ in range(k):
        x = torch.cat(inputs)[None]
        z = model.get_decoder()(inputs_embeds=x).last_hidden_state[0, -1]
        rows.append(z)
        inputs.append(head(z)[None])
    return torch.stack(rows)


def test_latent_steps_match_a_manual_loop_and_batching():
    lm = load("tiny-llama", dtype="float32")
    model = lm.model.eval()
    head = LatentStepHead.initial(model.get_input_embeddings())
    prompts = [[5, 6, 7, 8, 9], [11, 12, 13]]  # different lengths: the second is left padded
    with torch.no_grad():
        batched = latent_steps(model, head, prompts, 4, pad_id=0)
        atol = 1e-4 if model.device.type == "cuda" else 1e-5  # other kernels for padded batches on a GPU
        for i, p in enumerate(prompts):
            assert torch.allclose(batched[i], manual(model, head, p, 4), atol=atol)
    assert batched.shape == (2, 4, model.config.hidden_size)
    # The steps differ from one another: the loop feeds back, it does not repeat one state.
    assert (batched[0, 1:] - batched[0, :-1]).abs().max() > 1e-4


def test_initial_head_maps_states_to_the_embedding_scale():
    lm = load("tiny-llama", dtype="float32")
    embed = lm.model.get_input_embeddings()
    head = LatentStepHead.initial(embed)
    z = torch.randn(3, embed.weight.shape[1], device=embed.weight.device) * 40  # last-layer states are large
    mean_norm = float(embed.weight.detach().norm(dim=1).mean())
    out_norm = float((head(z) - embed.weight.mean(0)).detach().norm(dim=1).mean())
    assert abs(out_norm - mean_norm) / mean_norm < 0.05
    assert torch.allclose(head.lat_bos, embed.weight.mean(0))
