"""Whether a latent receiver reads its message while it trains.

Trains the latent receiver of the default probe (the probe preset, through the real trainer,
written to the cache where `run` finds it) and every ``--every`` steps prints the answer
token's cross-entropy and accuracy on 32 fixed training conversations, slot fully latent,
with each conversation's own latents and with another's (shifted by one). A receiver that
reads the channel has the first low and the second high.

    python bench/channel_trace.py --sender smollm2-135m --receiver gemma3-270m
"""

from __future__ import annotations

import argparse
import time

import torch

from interlat_bench.harness.runner import Cell, one_spec
from interlat_bench.trainers import receiver as trainer


def answer_ce(module, examples, latents) -> tuple[float, float]:
    """Cross-entropy and accuracy of each conversation's first supervised token (the answer's)."""
    with torch.no_grad():
        logits, targets, _ = module._logits([module._sequence(e, module.slot(e, lat, 1.0))
                                             for e, lat in zip(examples, latents, strict=True)])
    first, gold = logits[:, 0], targets[:, 0]
    return torch.nn.functional.cross_entropy(first, gold).item(), (first.argmax(-1) == gold).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sender", default="smollm2-135m")
    ap.add_argument("--receiver", default="smollm2-135m")
    ap.add_argument("--every", type=int, default=8)
    args = ap.parse_args()
    spec = one_spec("latent", "probe", sender_model=args.sender, receiver_model=args.receiver, dtype="float32",
                    params={})
    state = {"step": 0, "examples": None, "start": time.perf_counter()}
    forward, build = trainer.SlotReceiver.forward, trainer.build_examples

    def keep_examples(*a, **kw):
        state["examples"] = build(*a, **kw)
        return state["examples"]

    def traced_forward(module, examples):
        if state["step"] % args.every == 0:
            fixed = state["examples"][:32]
            was_training = module.training
            module.eval()
            own = answer_ce(module, fixed, [e.latents for e in fixed])
            other = answer_ce(module, fixed, [fixed[(i + 1) % len(fixed)].latents for i in range(len(fixed))])
            module.train(was_training)
            print(f"step {state['step']:4d} ({time.perf_counter() - state['start']:.0f} s): answer CE own "
                  f"{own[0]:.3f} (right {own[1]:.0%}), another's {other[0]:.3f} (right {other[1]:.0%})", flush=True)
        state["step"] += 1
        return forward(module, examples)

    trainer.build_examples, trainer.SlotReceiver.forward = keep_examples, traced_forward
    print("receiver", Cell(spec).checkpoint())


if __name__ == "__main__":
    main()
