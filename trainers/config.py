"""A receiver's training settings (``TrainConfig``) and the presets that size them: plain data,
read by the trainer, the checkpoint keys and the run keys alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    n_train: int | None = 32        # training conversations (None: all)
    epochs: float = 1.0
    batch_size: int = 2
    grad_accum: int = 1
    lr: float = 2e-5                # receiver
    adapter_lr: float = 1e-4
    warmup_ratio: float = 0.0
    max_len: int = 384              # tokens after the slot (the conversation), truncated
    max_slot_rows: int = 128
    plan_weight: float = 0.5
    # Cross-entropy on the plan-text pass too (latent receivers; 0 = off, as in SPEC 4): L_plan's
    # target is this receiver reading the plan's token embeddings, and without a loss of its own
    # that reading is trained only through the curriculum's plan tails. At 8 facts x 4 options
    # the latent-trained receiver given the exact embeddings read 8 of 99 fewer stated facts
    # right than the text receiver (bench/probe_slot_swap.py, docs/performance.md).
    plan_ce_weight: float = 0.0
    neg_weight: float = 0.1
    margin: float = 0.3
    adaptive_weights: bool = False
    curriculum: str = "schedule"
    seed: int = 0
    # Position information in the adapter's self-attention (CommAdapter `positions`): "none" (SPEC
    # 3, the paper's adapter: attention over the rows as a set) or "rope" (rotary positions, so a
    # row can read its neighbours by offset).
    adapter_positions: str = "none"
    # Adapter-only steps before training (warm_up_adapter); 0 = none, as in the paper.
    adapter_warmup_steps: int = 0
    # The warm-up's own learning rate (None: adapter_lr). Kept apart from adapter_lr because a
    # rate that fits the warm-up's dense regression target random-walks the adapter away from it
    # under the sparse receiver losses that follow (probe: colour rows' cosine 0.99 -> 0.09).
    warmup_lr: float | None = None
    # Weight of a cross-entropy term in the warm-up: each row's dot products with the receiver
    # embeddings of the plan vocabulary (every token some training row stands for) against the
    # row's own token. MSE alone pulls a row towards its token but not away from the tokens it
    # competes with: at 4 facts x 8 options the rows standing for object names, whose sender
    # states are near-ties between the facts still to state, were the nearest token 80% of the
    # time on held-out plans after 1000 MSE steps and 88% with this term at 0.1 (colours 90% and
    # 89%). Restricting the softmax to the plan vocabulary (115 tokens there) costs about nothing;
    # the full 49k-token vocabulary made each step ~10x slower on a CPU for the same gain.
    # But softmax over dot products rewards a row's length: the term keeps growing rows along
    # what tells their token apart (2.0x the token's norm, cosine 0.82, after 1000 steps at
    # 0.1), and the receiver reads such rows worse. Given 3000 steps, the MSE alone names more
    # rows (4 x 4 held-out fact rows 96.8% against 95.1%) at their tokens' norm: the probe
    # preset no longer uses this term.
    warmup_ce_weight: float = 0.0
    # Sender plans the warm-up reads (None: those of the receiver's training tasks). The warm-up
    # is self-supervised (each row's target is the token the sender wrote there), so plans for
    # further training tasks cost a collection only, not receiver training. What the rows carry
    # is there to read (the sender's own LM head names 100% of the fact tokens of held-out plans
    # at 4 facts x 8 options); what the adapter learns from 256 plans does not generalise (fact
    # rows the nearest token 97.9% of the time on training plans, 88.5% on held-out ones; 94.9%
    # after 2048 plans: bench/warmup_rows.py, docs/performance).
    warmup_plans: int | None = None
    # Batch conversations of similar length (LengthBatches): less padding, the same examples
    # per epoch, batches in a seeded random order.
    group_by_length: bool = False
    # Rejected actions per expert conversation, not trained on, each followed by the expert's
    # next action (Benchmark.train_samples; ALFWorld): the receiver sees how to recover from a
    # "Nothing happens." that plain expert play never shows it.
    detours: int = 0

    def __post_init__(self):
        # `epochs=2` and `epochs=2.0` are one setting: float fields hold floats, so the run key
        # and the receiver's cache key are the same for both.
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in (float, "float") and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))

    def key_dict(self) -> dict[str, Any]:
        """The settings as keys see them (a run's ``training``, a checkpoint's key): a setting
        added later is left out while unset, so earlier keys stay as they were."""
        config = asdict(self)
        if config["warmup_lr"] is None:
            del config["warmup_lr"]
        if not config["warmup_ce_weight"]:
            del config["warmup_ce_weight"]
        if config["warmup_plans"] is None:
            del config["warmup_plans"]
        if not config["plan_ce_weight"]:
            del config["plan_ce_weight"]
        if config["adapter_positions"] == "none":
            del config["adapter_positions"]
        return config

    def weights(self):
        from interlat_bench.trainers.losses import LossWeights  # torch: not for plain settings

        return LossWeights(plan=self.plan_weight, neg=self.neg_weight, margin=self.margin,
                           adaptive=self.adaptive_weights, plan_ce=self.plan_ce_weight)


PRESETS = {
    # Sized for a 2-core CPU: tens of examples, one epoch, short sequences.
    "quick": TrainConfig(group_by_length=True),
    # Longer CPU training for ALFWorld receivers that act: more expert games, conversations up
    # to 768 tokens, a higher learning rate, detours (rejected actions the receiver sees the
    # expert recover from), and two epochs: on held-out training games the second epoch took
    # valid actions from 67.4% to 84.6% (bench/alfworld_heldout.py, README).
    "cpu": TrainConfig(n_train=256, epochs=2.0, lr=1e-4, max_len=768, group_by_length=True, detours=3),
    # The paper's regime, for GPUs (bf16 there): all data, longer sequences, full slots.
    "paper": TrainConfig(n_train=None, epochs=3.0, batch_size=4, grad_accum=4, lr=1e-5, adapter_lr=1e-4,
                         warmup_ratio=0.03, max_len=2048, max_slot_rows=1024),
}


def preset(name: str, **overrides) -> TrainConfig:
    from interlat_bench.harness.core.errors import UserError

    if name not in PRESETS:
        raise UserError(f"training preset {name!r}: expected one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
