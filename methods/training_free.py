"""What the training-free families share (LatentMAS, KVComm, CIPHER, activation communication):
no training, the sender's pass declared as a stage, the plain receiver model reading what it
is sent, and the controls that tell a channel from a leak.

``control`` (in the run key): ``none``; ``cross_task``, another evaluation task's message
(drawn as the `cross_task` row draws it); and three that destroy each matrix the message ships
(a KV layer's keys, its values, CIPHER's rows; positions x features) in its own way:
``randomrot``, randomly rotated within its span, its mean and covariance over positions kept
(the `randomrot` row's map); ``gaussian``, its rows drawn anew from a Gaussian with its mean and
covariance (the `covgauss_mu` row's draw): content gone, first and second moments kept;
``truncate``, its first half of positions kept (ceil(L/2), the `truncate` row at rho 0.5).
"""

from __future__ import annotations

from typing import Any, ClassVar

from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.message import NO_MESSAGE, MessageKind
from interlat_bench.harness.core.params import one_of
from interlat_bench.harness.core.stages import SenderPass, Stages
from interlat_bench.methods.base import Method

CONTROLS = ("none", "cross_task", "randomrot", "gaussian", "truncate")


class TrainingFree(Method):
    """Base of a training-free family: its ``family`` names its sender (``collectors.<family>``)."""

    family: ClassVar[str]
    # Whether what is sent only makes sense to the sender's own model (its cache, its layers).
    same_model: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"control": "none"}
    param_checks = {"control": one_of(*CONTROLS)}

    def sender_settings(self) -> dict[str, Any]:
        """The collector's keyword arguments, from this method's parameters."""
        raise NotImplementedError

    def calibration_settings(self) -> dict[str, Any]:
        """Where ``stages`` asks for a calibration: the settings its training samples are sent with."""
        raise NotImplementedError

    def calibrated(self, attention) -> dict[str, Any]:
        """The settings fitted on the calibration: ``attention``, per layer, the receiver's mean
        attention on what was sent (``KVPrefixAgent.prefix_attention``)."""
        raise NotImplementedError

    def stages(self, benchmark, spec) -> Stages:
        if self.same_model and spec.sender_model != spec.receiver_model:
            raise UserError(f"{self.name}: the receiver reads the sender's own {self.sends} message, so sender and "
                            f"receiver must be one model (got --sender {spec.sender_model} --receiver {spec.receiver_model})")
        return Stages(messages=SenderPass(self.family, spec.sender_model, spec.dtype, benchmark.planner_prompt,
                                          tuple(sorted(self.sender_settings().items())), self.calibration()))

    def calibration(self) -> int:
        """How many training samples the sender's settings are fitted on first; 0: none."""
        return 0

    def message_for(self, sample, messages, seed):
        if self.params["control"] != "cross_task" or sample.id not in messages:
            return super().message_for(sample, messages, seed)
        from interlat_bench.methods.perturbations.cross_task import other_task

        return messages[other_task(sample.id, list(messages), seed)]

    def transform(self, message, rng):
        control = self.params["control"]
        if control in ("none", "cross_task") or message is NO_MESSAGE:
            return message
        import torch

        from interlat_bench.methods.perturbations.covariance import covgauss
        from interlat_bench.methods.perturbations.randomrot import randomrot
        from interlat_bench.methods.perturbations.truncate import truncate

        destroy = {"randomrot": lambda m: randomrot(m, rng), "gaussian": lambda m: covgauss(m, rng, keep_mean=True),
                   "truncate": lambda m: truncate(m, 0.5)}[control]

        def destroyed(t):  # (positions x features) per matrix; a KV layer is heads x positions x dim
            flat = t.transpose(0, 1).reshape(t.shape[1], -1) if t.dim() == 3 else t
            out = destroy(flat.to(torch.float64)).to(t.dtype)
            return out.reshape(out.shape[0], t.shape[0], t.shape[2]).transpose(0, 1) if t.dim() == 3 else out

        if message.kind is MessageKind.KV:
            return message.with_kv(tuple((destroyed(k), destroyed(v)) for k, v in message.kv))
        return message.with_latents(destroyed(message.latents))

    def receiver(self, ctx):
        return ctx.model(ctx.spec.receiver_model)
