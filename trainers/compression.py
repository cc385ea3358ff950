"""Compression training (SPEC section 5): a student sender learns to speak in K latents.

The student starts as a copy of the sender with the initial ``LatentStepHead`` (the state
`untrained_k` sends with) and runs K latent steps after LATENT_STEP_PROMPT. The receiver
trained for `latent` and its adapter are frozen; per batch, three receiver passes over the
same conversations:
  A: the student's K latents in the slot (the gradient flows back through the frozen
     receiver and adapter into the student and its head);
  D: the sender's full collected latents (no gradient);
  B: an empty slot (no gradient);
and the loss is CE_A + 0.1 * L_KL(D -> A, entropy-gap weights from B and D, T = 4) +
0.1 * L_align(mean Z, mean M) (``trainers.losses``). Students are cached by content: the
receiver checkpoint, the training data and messages, and this config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from interlat_bench.collectors.latent_steps import LatentStepHead, latent_steps
from interlat_bench.collectors.messages import prompt_ids
from interlat_bench.harness.core import progress
from interlat_bench.harness.core.atomic import atomic_folder
from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.prompts import LATENT_STEP_PROMPT
from interlat_bench.harness.core.settings import cache_dir
from interlat_bench.trainers.checkpoint import Receiver
from interlat_bench.trainers.losses import align_loss, compression_kl_loss
from interlat_bench.trainers.receiver import Example, SlotReceiver, build_examples
from interlat_bench.trainers.slot import slot_rows

COMPRESS_VERSION = 1
HEAD_FILE = "latent_head.pt"


@dataclass(frozen=True)
class CompressConfig:
    k: int = 8
    epochs: float = 1.0
    batch_size: int = 8
    lr: float = 1e-5            # the student LM
    head_lr: float = 1e-3       # lat_bos and h2e
    kl_weight: float = 0.1
    align_weight: float = 0.1
    temperature: float = 4.0
    kl_tokens: int = 64         # the first supervised tokens the KL weights cover
    seed: int = 0


@dataclass
class Student:
    lm: object                  # LoadedModel: the student sender
    head: LatentStepHead
    folder: Path | None = None


class CompressionObjective(nn.Module):
    """The student and its head, with the frozen receiver; ``forward`` returns the loss."""

    def __init__(self, student_model, head: LatentStepHead, receiver: SlotReceiver, pad_id: int,
                 cfg: CompressConfig):
        super().__init__()
        self.student, self.head, self.receiver = student_model, head, receiver
        self.pad_id, self.cfg = pad_id, cfg
        self.last_parts: dict[str, float] = {}

    def _pass(self, examples: list[Example], slots: list[torch.Tensor | None]):
        return self.receiver._logits([self.receiver._sequence(ex, s) for ex, s in zip(examples, slots)])

    def forward(self, examples: list[Example], prompts: list[list[int]]) -> torch.Tensor:
        rc, cfg = self.receiver, self.cfg
        embed = rc.lm.get_input_embeddings()
        z = latent_steps(self.student, self.head, prompts, cfg.k, self.pad_id)  # (B, K, H_s), with grad

        def slot(latents):
            return slot_rows(MessageKind.LATENT, latents=latents, plan_ids=[], adapter=rc.adapter, embed=embed,
                             max_rows=None, ratio=1.0)

        logits_a, targets, mask = self._pass(examples, [slot(row) for row in z])
        with torch.no_grad():
            logits_d, _, mask_d = self._pass(examples, [slot(ex.latents[:ex.max_rows]) for ex in examples])
            logits_b, _, mask_b = self._pass(examples, [None] * len(examples))
        ce = nn.functional.cross_entropy(logits_a[mask], targets[mask])
        kl = compression_kl_loss(logits_a, logits_d, logits_b, (mask, mask_d, mask_b), T=cfg.temperature,
                                 first=cfg.kl_tokens)
        m = nn.utils.rnn.pad_sequence([ex.latents[:ex.max_rows] for ex in examples], batch_first=True)
        pad = torch.ones(m.shape[:2], dtype=torch.bool)
        for i, ex in enumerate(examples):
            pad[i, : len(ex.latents[:ex.max_rows])] = False
        align = align_loss(z, m.to(z.device), pad)
        loss = ce + cfg.kl_weight * kl + cfg.align_weight * align
        self.last_parts = {k: float(v.detach()) for k, v in (("loss", loss), ("ce", ce), ("kl", kl), ("align", align))}
        return loss


def student_key(receiver_folder: Path, cfg: CompressConfig, data_ids: list[str], messages_key: str | None,
                dtype: str) -> str:
    blob = json.dumps({"v": COMPRESS_VERSION, "receiver": Path(receiver_folder).name, "cfg": asdict(cfg),
                       "data": hashlib.sha256("\n".join(data_ids).encode()).hexdigest(),
                       "messages": messages_key, "dtype": dtype}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_student(sender_ref: str, receiver: Receiver, receiver_folder: Path, samples, messages: dict,
                  cfg: CompressConfig, *, messages_key: str | None = None, plan_prompt: str | None = None,
                  dtype: str = "float32", log=print) -> Path:
    """Train (or reuse) a compression student against the frozen ``receiver``; its folder."""
    from interlat_bench.harness.core import conversation as conv
    from interlat_bench.harness.core import models

    key = student_key(receiver_folder, cfg, [s.id for s in samples], messages_key, dtype)
    target = cache_dir() / "students" / key
    if (target / "DONE").exists():
        log(f"reusing trained K={cfg.k} student {target}")
        return target
    torch.manual_seed(cfg.seed)
    student = models.load(sender_ref, dtype="float32", seed=cfg.seed)  # a private copy: it trains
    head = LatentStepHead.initial(student.model.get_input_embeddings())
    lm = receiver.lm
    bop, eop = conv.add_slot_tokens(lm)
    examples = build_examples(lm.tokenizer, samples, messages, MessageKind.LATENT, receiver.cfg, plan_prompt=plan_prompt)
    by_id = {s.id: s for s in samples}
    prompts = {ex.task_id: prompt_ids(student.tokenizer, LATENT_STEP_PROMPT, by_id[ex.task_id].task)
               for ex in examples}
    frozen = SlotReceiver(lm.model, receiver.adapter, MessageKind.LATENT, bop, eop, receiver.cfg.weights())
    for p in frozen.parameters():
        p.requires_grad_(False)
    frozen.eval()  # no dropout: the receiver is what evaluation will read with
    tok = student.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    objective = CompressionObjective(student.model, head, frozen, pad, cfg)
    student.model.train()
    opt = torch.optim.AdamW([{"params": student.model.parameters(), "lr": cfg.lr},
                             {"params": head.parameters(), "lr": cfg.head_lr}], weight_decay=0.0)
    steps = max(1, round(cfg.epochs * len(examples) / cfg.batch_size))
    order = torch.Generator().manual_seed(cfg.seed)
    history = []
    perm = torch.randperm(len(examples), generator=order).tolist()
    at = 0
    with progress.track(f"train K={cfg.k} student", steps) as stage:
        for step in range(steps):
            if at + cfg.batch_size > len(perm):
                perm, at = torch.randperm(len(examples), generator=order).tolist(), 0
            batch = [examples[i] for i in perm[at: at + cfg.batch_size]]
            at += cfg.batch_size
            with torch.autocast(device_type=lm.model.device.type, dtype=torch.bfloat16,
                                enabled=dtype == "bfloat16" and torch.cuda.is_available()):
                loss = objective(batch, [prompts[ex.task_id] for ex in batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append({"step": step, **objective.last_parts})
            stage.advance(info=", ".join(f"{k} {v:.3f}" for k, v in objective.last_parts.items()))
    student.model.eval()
    with atomic_folder(target, overwrite=True) as tmp:
        student.model.save_pretrained(tmp / "student")
        student.tokenizer.save_pretrained(tmp / "student")
        torch.save(head.state_dict(), tmp / HEAD_FILE)
        (tmp / "compress_config.json").write_text(json.dumps(
            {"config": asdict(cfg), "sender": sender_ref, "receiver": str(receiver_folder), "history": history,
             "version": COMPRESS_VERSION}, indent=1))
        (tmp / "DONE").write_text("")
    log(f"trained K={cfg.k} student on {len(examples)} tasks -> {target}")
    return target


def load_student(folder: Path, dtype: str = "float32") -> Student:
    from interlat_bench.harness.core import models

    lm = models.load(str(Path(folder) / "student"), dtype=dtype)
    head = LatentStepHead(lm.hidden_size)
    head.load_state_dict(torch.load(Path(folder) / HEAD_FILE, map_location="cpu"))
    return Student(lm=lm, head=head.to(lm.model.device).eval(), folder=Path(folder))
