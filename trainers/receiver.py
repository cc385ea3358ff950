"""Receiver training (SPEC section 4): full fine-tuning of the receiver plus the adapter.

The same trainer serves the three message kinds, so `latent`, `text` and `no_comm`
differ only in what fills the slot:
- latent: adapter(M) mixed with the plan-embedding tail by the curriculum; loss
  CE + w_plan * L_plan + w_neg * L_neg (+ w_plan_ce * the plan-text pass's CE, off by default);
- text:   the plan's token embeddings (receiver tokenizer); CE only;
- none:   an empty slot (<bop><eop>); CE only.
Built on the HF Trainer, so multi-GPU and a DeepSpeed config work unchanged.
Checkpoints are content-addressed by everything that changes the weights.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interlat_bench.harness.core import conversation as conv
from interlat_bench.harness.core import progress
from interlat_bench.harness.core.atomic import set_aside
from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.settings import cache_dir, process_rank
from interlat_bench.harness.core.stages import ReceiverTraining
from interlat_bench.trainers.adapter import CommAdapter
from interlat_bench.trainers.checkpoint import (
    checkpoint_key,
    checkpoint_problem,
    messages_key,
    save,
    training_data_ids,
)
from interlat_bench.trainers.config import TrainConfig
from interlat_bench.trainers.curriculum import Curriculum
from interlat_bench.trainers.losses import (
    LossWeights,
    combine,
    negative_latents,
    plan_alignment_loss,
    separation_loss,
)
from interlat_bench.trainers.slot import slot_rows

IGNORE = -100


@dataclass
class Example:
    task_id: str
    before: list[int]
    after: list[int]
    supervised: list[bool]
    latents: torch.Tensor | None = None   # (L, H_s), the whole message
    # Receiver token ids of the plan tokens the latent rows predicted (row_targets: the sender's
    # ids, or the receiver's tokens at the same characters across tokenizers). Adapter warm-up only.
    row_tokens: list[int] | None = None
    plan_ids: list[int] = field(default_factory=list)  # receiver tokens of the plan text, all of them
    max_rows: int | None = None           # slot limit (cfg.max_slot_rows), applied by slot_rows
    slot: bool = True                     # <bop> slot <eop> between before and after (Layout.SLOT)


def build_examples(tokenizer, samples, messages: dict, kind: MessageKind | str, cfg: TrainConfig,
                   layout: conv.Layout | str = conv.Layout.SLOT, plan_prompt: str | None = None,
                   sender_tokenizer=None) -> list[Example]:
    """Join conversations with messages by task id; tasks without a message are dropped.
    ``sender_tokenizer`` (when it is not the receiver's) lets latent rows be matched to the
    receiver's own tokens of the same text (``row_targets``).

    ``layout`` (harness.core.conversation.Layout): SLOT puts the message in the slot; the
    single-agent layouts put it in the token sequence itself (OWN_PLAN: the agent's own plan
    turn from ``plan_prompt``), so no slot rows are built for them."""
    kind, layout = MessageKind(kind), conv.Layout(layout)
    out = []
    for s in samples:
        m = messages.get(s.id)
        if kind is not MessageKind.NONE and m is None:
            continue
        msgs = [dict(t) for t in s.data["conversation"]]
        msgs = conv.opening(msgs[0]["content"], layout, message_kind=kind, plan_text=m.text if m else None,
                            task=s.task, plan_prompt=plan_prompt) + msgs[1:]
        enc = conv.encode(tokenizer, msgs, add_generation_prompt=False)
        ex = Example(s.id, enc.before, enc.after[: cfg.max_len], enc.labels_after[: cfg.max_len],
                     max_rows=cfg.max_slot_rows, slot=layout is conv.Layout.SLOT)
        if kind is not MessageKind.NONE and ex.slot:
            # The whole message: trainers.slot.slot_rows truncates it to max_rows, at evaluation too.
            ex.plan_ids = conv.tokenize(tokenizer, m.text or "")
            if kind is MessageKind.LATENT:
                ex.latents = m.latents.float()
                ex.row_tokens = row_targets(tokenizer, m.text or "", list(m.token_ids or ()), len(ex.latents),
                                            sender_tokenizer)
        out.append(ex)
    return out


def row_targets(tokenizer, text: str, ids: list[int], rows: int, sender_tokenizer=None) -> list[int] | None:
    """For each latent row, the receiver token of the plan token that row predicted.

    Same tokenizer: the sender's ids themselves. Another tokenizer (cross-family): the
    receiver token of ``text`` whose characters hold the first character of the sender's
    token (fast tokenizers' offset mapping). None when the rows and the plan do not match."""
    if len(ids) != rows or not ids:
        return None
    sender_tokenizer = sender_tokenizer or tokenizer
    if max(ids) < len(tokenizer) and tokenizer.convert_ids_to_tokens(ids) == sender_tokenizer.convert_ids_to_tokens(ids) \
            and tokenizer.decode(ids, skip_special_tokens=True) == text:
        return ids
    if sender_tokenizer is tokenizer or sender_tokenizer.decode(ids, skip_special_tokens=True) != text:
        return None
    import bisect

    # First character of each sender token: the length of the text its predecessors decode to.
    starts = [len(sender_tokenizer.decode(ids[:i], skip_special_tokens=True)) for i in range(len(ids))]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if not enc["input_ids"]:
        return None
    begins = [b for b, _ in enc["offset_mapping"]]
    return [enc["input_ids"][max(bisect.bisect_right(begins, c) - 1, 0)] for c in starts]


class SlotReceiver(nn.Module):
    """The receiver LM with the adapter; forward returns the Interlat loss for a batch."""

    def __init__(self, lm_model, adapter: CommAdapter | None, kind: MessageKind | str, bop: int, eop: int,
                 weights: LossWeights, seed: int = 0):
        super().__init__()
        self.lm = lm_model
        self.adapter = adapter
        self.kind = MessageKind(kind)
        self.bop, self.eop = bop, eop
        self.weights = weights
        self.seed = seed
        self.ratio = 1.0  # set by the trainer each step (curriculum)
        self.last_parts: dict[str, float] = {}
        self.engine: dict[str, Any] = {}

    def _embed(self, ids: list[int]) -> torch.Tensor:
        emb = self.lm.get_input_embeddings()
        return emb(torch.tensor(ids, dtype=torch.long, device=emb.weight.device))

    def _sequence(self, ex: Example, slot: torch.Tensor | None) -> tuple[torch.Tensor, list[int]]:
        if not ex.slot:  # a single agent: the whole conversation is tokens
            embeds = self._embed(ex.before + ex.after)
        else:
            parts = [self._embed(ex.before + [self.bop])]
            if slot is not None and len(slot):
                parts.append(slot.to(parts[0].dtype))
            parts.append(self._embed([self.eop] + ex.after))
            embeds = torch.cat(parts)
        prefix = embeds.shape[0] - len(ex.after)
        labels = [IGNORE] * prefix + [t if s else IGNORE for t, s in zip(ex.after, ex.supervised)]
        return embeds, labels

    def _logits(self, seqs: list[tuple[torch.Tensor, list[int]]]):
        """Right-padded forward; returns logits at the supervised positions, packed to the left
        per row (B, S_max, V), their targets (B, S_max) and mask (B, S_max)."""
        width = max(e.shape[0] for e, _ in seqs)
        hidden = seqs[0][0].shape[1]
        dev = seqs[0][0].device
        embeds = torch.zeros(len(seqs), width, hidden, dtype=seqs[0][0].dtype, device=dev)
        mask = torch.zeros(len(seqs), width, dtype=torch.long, device=dev)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long, device=dev)
        for i, (e, lab) in enumerate(seqs):
            embeds[i, : e.shape[0]] = e
            mask[i, : e.shape[0]] = 1
            labels[i, : e.shape[0]] = torch.tensor(lab, device=dev)
        # The LM head runs only where a label is supervised (every loss reads those positions
        # alone): the states are packed to the left per row, (B, S_max, H), S_max = the most
        # supervised tokens in a row. The losses pair positions by their index among supervised
        # tokens, which packing keeps. On a CPU the vocabulary projection of every position was
        # a large share of a step.
        states = self.lm.get_decoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        sup = targets != IGNORE
        counts = sup.sum(dim=1)
        width = max(int(counts.max()), 1)
        packed_mask = torch.arange(width, device=dev)[None, :] < counts[:, None]
        rows, cols = sup.nonzero(as_tuple=True)  # row-major: positions in sequence order per row
        slots = torch.arange(len(rows), device=dev) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        packed = states.new_zeros(len(seqs), width, states.shape[-1])
        packed[rows, slots] = states[rows, cols]
        packed_targets = torch.full((len(seqs), width), IGNORE, dtype=torch.long, device=dev)
        packed_targets[rows, slots] = targets[rows, cols]
        logits = self.lm.get_output_embeddings()(packed).float()
        return logits, packed_targets, packed_mask

    def slot(self, ex: Example, latents: torch.Tensor | None, ratio: float) -> torch.Tensor | None:
        """The slot for ``ex`` with ``latents`` in it (None: the plan text), built as at evaluation."""
        return slot_rows(self.kind, latents=latents, plan_ids=ex.plan_ids, adapter=self.adapter,
                         embed=self.lm.get_input_embeddings(), max_rows=ex.max_rows, ratio=ratio)

    def forward(self, examples: list[Example]):
        lat_logits, targets, sup = self._logits([self._sequence(ex, self.slot(ex, ex.latents, self.ratio))
                                                 for ex in examples])
        ce = nn.functional.cross_entropy(lat_logits[sup], targets[sup])
        plan_loss = neg_loss = plan_ce = None
        if self.kind is MessageKind.LATENT:
            # The plan-text pass is L_plan's target (detached there); it carries gradient only
            # when it is also trained on (plan_ce).
            with contextlib.nullcontext() if self.weights.plan_ce > 0 else torch.no_grad():
                plan_logits, plan_targets, plan_sup = self._logits([self._sequence(ex, self.slot(ex, None, 0.0))
                                                                    for ex in examples])
            if self.weights.plan_ce > 0:
                plan_ce = nn.functional.cross_entropy(plan_logits[plan_sup], plan_targets[plan_sup])
            plan_loss = plan_alignment_loss(lat_logits, plan_logits, sup, plan_sup)
            negs = negative_latents([ex.latents for ex in examples],
                                    rng=torch.Generator().manual_seed(self.seed + int(self.ratio * 1e6)))
            if negs is not None and self.weights.neg > 0:
                with torch.no_grad():
                    neg_logits, _, neg_sup = self._logits([self._sequence(ex, self.slot(ex, n, 1.0))
                                                           for ex, n in zip(examples, negs)])
                neg_loss = separation_loss(lat_logits, neg_logits, sup, neg_sup, self.weights.margin)
        total, self.last_parts = combine(ce, plan_loss, neg_loss, self.weights, plan_ce)
        self.last_parts["ratio"] = self.ratio
        return total


def _collate(batch: list[Example]) -> dict[str, Any]:
    return {"examples": batch}


def sequence_length(ex: Example) -> int:
    """Positions of ``ex`` in the receiver's forward pass (slot rows at their full count)."""
    if not ex.slot:
        return len(ex.before) + len(ex.after)
    rows = len(ex.latents) if ex.latents is not None else len(ex.plan_ids or ())
    return len(ex.before) + len(ex.after) + 2 + min(rows, ex.max_rows)


class LengthBatches(torch.utils.data.Sampler):
    """Indices such that consecutive runs of ``batch_size`` hold conversations of similar
    length: all sorted by length (ties broken at random), cut into batches, the batches
    shuffled; seeded, and drawn afresh each epoch. transformers' LengthGroupedSampler sorts
    only within groups of ``len // (4 * batch_size)`` batches, which for the tens of
    conversations of a CPU preset leaves most of the padding in place."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0):
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        ties = torch.rand(len(self.lengths), generator=rng).tolist()
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], ties[i]))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for b in torch.randperm(len(batches), generator=rng).tolist():
            yield from batches[b]


def padding_share(examples: list[Example], order: list[int], batch_size: int) -> float:
    """Share of the positions of right-padded batches (taken in ``order``) that are padding."""
    lengths = [sequence_length(examples[i]) for i in order]
    batches = [lengths[i:i + batch_size] for i in range(0, len(lengths), batch_size)]
    padded = sum(len(b) * max(b) for b in batches)
    return 1 - sum(lengths) / padded if padded else 0.0


def train_receiver_stage(stage: ReceiverTraining, train, plans: dict | None, further: dict | None, *,
                         deepspeed: str | None = None, log=print) -> Path:
    """The receiver-training stage built from its spec (``harness.core.stages.ReceiverTraining``):
    ``train`` the benchmark's training samples, ``plans`` the sender's plans for them and
    ``further`` its plans for the warm-up's further tasks (collections, or None). Returns the
    checkpoint folder, trained now or found in the cache under the same key as ever."""
    key = messages_key(*(m.key for m in (plans, further) if m is not None))
    return train_receiver(stage.receiver_model, stage.kind, train, {**(plans or {}), **(further or {})},
                          TrainConfig(**stage.config()), messages_key=key, dtype=stage.dtype, deepspeed=deepspeed,
                          log=log, layout=stage.layout, plan_prompt=stage.plan_prompt, sender_ref=stage.sender_model)


def train_receiver(receiver_ref: str, kind: MessageKind | str, samples, messages: dict, cfg: TrainConfig, *,
                   messages_key: str | None = None, dtype: str = "float32", deepspeed: str | None = None,
                   log=print, out_root: Path | None = None, layout: conv.Layout | str = conv.Layout.SLOT,
                   plan_prompt: str | None = None, sender_ref: str | None = None) -> Path:
    """Train (or reuse) a receiver; returns its checkpoint folder. ``layout``/``plan_prompt``:
    where the message goes (``build_examples``); single agents read it as tokens, not slot rows.
    ``sender_ref``: whose tokens the latent rows stand for (adapter warm-up across tokenizers)."""
    from interlat_bench.harness.core import models

    kind, layout = MessageKind(kind), conv.Layout(layout)
    slot_kind = kind if layout is conv.Layout.SLOT else MessageKind.NONE  # what fills the slot, if any
    label = ("no_comm (empty slot)" if kind is MessageKind.NONE else str(kind)) if layout is conv.Layout.SLOT \
        else f"single-agent ({layout}, {kind})"

    sender_dim = next((int(m.latents.shape[1]) for m in messages.values() if m.latents is not None), None) \
        if slot_kind is MessageKind.LATENT else None
    key = checkpoint_key(receiver_ref, kind, cfg, training_data_ids(samples), messages_key, dtype, sender_dim, layout)
    target = (out_root or cache_dir() / "receivers") / key
    if (target / "DONE").exists():
        problem = checkpoint_problem(target)
        if problem is None:
            log(f"reusing trained {label} receiver {target}")
            return target
        set_aside(target, problem, log=log)
    # Master weights stay in fp32 whatever the run's dtype: AdamW steps of ~1e-5 applied to
    # bf16 weights mostly round away. `dtype` sets the compute precision (autocast) only.
    lm = models.load(receiver_ref, dtype="float32", seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # <bop>/<eop> start as draws from the embeddings' distribution
    bop, eop = conv.add_slot_tokens(lm)
    sender_tok = models.tokenizer(sender_ref) if sender_ref and slot_kind is MessageKind.LATENT \
        and cfg.adapter_warmup_steps else None
    examples = build_examples(lm.tokenizer, samples, messages, kind, cfg, layout, plan_prompt, sender_tok)
    if not examples:
        from interlat_bench.harness.core.errors import UserError

        raise UserError(f"no training examples for the {kind} receiver (no messages joined by task id)")
    adapter = None
    if slot_kind is MessageKind.LATENT:
        torch.manual_seed(cfg.seed)
        adapter = CommAdapter(sender_dim, lm.hidden_size, positions=cfg.adapter_positions).to(lm.model.device)
        if cfg.adapter_warmup_steps:
            further = further_plan_rows(lm.tokenizer, messages, examples, cfg, sender_tok) if cfg.warmup_plans else []
            warm_up_adapter(adapter, lm.model.get_input_embeddings(), examples, cfg, log, further=further)
    module = SlotReceiver(lm.model, adapter, slot_kind, bop, eop, cfg.weights(), seed=cfg.seed)
    module.train()
    history = _fit(module, examples, cfg, deepspeed=deepspeed, label=label, dtype=dtype)
    module.eval()
    # Under torchrun the first process writes the checkpoint, the others wait for it rather than
    # race it. ZeRO-2 leaves every process the whole weights; ZeRO-3 leaves each a partition, so
    # all of them gather the weights (a collective) while the first one writes.
    with _whole_weights(module):
        if process_rank() == 0:
            save(target, lm, adapter, cfg, kind, history, receiver_ref, module.engine, layout)
            log(f"trained {label} receiver on {len(examples)} conversations -> {target}")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return target


def _whole_weights(module: nn.Module):
    """A context in which every parameter holds its whole value: DeepSpeed's gather after ZeRO-3,
    nothing to do otherwise."""
    if (getattr(module, "engine", None) or {}).get("zero_stage") != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)


def further_plan_rows(tokenizer, messages: dict, examples: list[Example], cfg: TrainConfig,
                      sender_tokenizer=None) -> list[tuple[torch.Tensor, list[int]]]:
    """(latent rows, the receiver token each stands for) of the plans in ``messages`` that no
    training conversation joins (``TrainConfig.warmup_plans``): the warm-up reads them, the
    receiver's training does not."""
    joined = {ex.task_id for ex in examples}
    out = []
    for task_id, m in messages.items():
        if task_id in joined or m.latents is None:
            continue
        tokens = row_targets(tokenizer, m.text or "", list(m.token_ids or ()), len(m.latents), sender_tokenizer)
        if tokens is not None:
            out.append((m.latents[: cfg.max_slot_rows].float(), tokens))
    return out


def warm_up_adapter(adapter: CommAdapter, embed: nn.Embedding, examples: list[Example], cfg: TrainConfig,
                    log=print, further: list[tuple[torch.Tensor, list[int]]] = ()) -> float | None:
    """Adapter-only warm-up before receiver training: each latent row is pulled (MSE) towards
    the receiver's embedding of the plan token that row predicted, so that at the start of
    training a latent slot reads like the plan text; with ``cfg.warmup_ce_weight`` the row must
    also pick its token out of the plan vocabulary (``plan_vocabulary_loss``). The receiver is
    untouched; the Interlat losses then train both as usual. Needs rows matched to receiver
    tokens (``Example.row_tokens``, from ``row_targets``); examples without them are skipped.
    ``further``: rows of plans beyond the training conversations (``further_plan_rows``), drawn
    from after the examples'. Returns the last loss."""
    pairs = [(ex.latents[: ex.max_rows], ex.row_tokens) for ex in examples if ex.row_tokens is not None]
    pairs += list(further)
    if not pairs:
        log("adapter warm-up skipped: no latent rows could be matched to the receiver's tokens")
        return None
    opt = torch.optim.AdamW(adapter.parameters(), lr=cfg.warmup_lr or cfg.adapter_lr, weight_decay=0.0)
    rng = torch.Generator().manual_seed(cfg.seed)
    dev = embed.weight.device
    vocabulary = torch.tensor(sorted({t for _, tokens in pairs for t in tokens}), device=dev)
    with torch.no_grad():  # the receiver's embeddings stay fixed during the warm-up: look them up once
        candidates = embed(vocabulary).float()
    loss = None
    with progress.track("warm up the adapter", cfg.adapter_warmup_steps) as stage:
        for step in range(1, cfg.adapter_warmup_steps + 1):
            batch = [pairs[int(i)] for i in torch.randint(len(pairs), (cfg.batch_size,), generator=rng)]
            losses = []
            for latents, row_tokens in batch:
                rows = adapter(latents.to(dev))
                tokens = torch.tensor(row_tokens[: len(rows)], device=dev)
                with torch.no_grad():
                    target = embed(tokens).float()
                row_loss = nn.functional.mse_loss(rows, target)
                if cfg.warmup_ce_weight:
                    row_loss = row_loss + cfg.warmup_ce_weight * plan_vocabulary_loss(rows, tokens, candidates,
                                                                                      vocabulary)
                losses.append(row_loss)
            loss = torch.stack(losses).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            # The loss is read back every 100 steps only: reading it waits for the device.
            stage.advance(info=f"loss {loss.item():.5f}" if step % 100 == 0 else "")
    log(f"adapter warm-up: {cfg.adapter_warmup_steps} steps on {len(pairs)} messages, final loss {loss.item():.5f}")
    return loss.item()


def plan_vocabulary_loss(rows: torch.Tensor, tokens: torch.Tensor, candidates: torch.Tensor,
                         vocabulary: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row's dot products with ``candidates``, the embeddings of
    ``vocabulary`` (sorted token ids, holding every id in ``tokens``), against its own token: a
    softmax over the tokens the rows can stand for, not the whole vocabulary."""
    return nn.functional.cross_entropy(rows @ candidates.T, torch.searchsorted(vocabulary, tokens))


def mixed_precision(dtype: str) -> dict[str, bool]:
    """TrainingArguments flags for a compute dtype; the weights themselves stay fp32."""
    from interlat_bench.harness.core.models import on_gpu, resolve_dtype

    torch_dtype = resolve_dtype(dtype)
    if torch_dtype == torch.float16 and not on_gpu():
        from interlat_bench.harness.core.errors import UserError

        raise UserError("--dtype float16: fp16 training needs CUDA (use bfloat16 or float32 on a CPU)")
    # use_cpu: transformers refuses bf16 without a GPU unless told it trains on the CPU.
    return {"bf16": torch_dtype == torch.bfloat16, "fp16": torch_dtype == torch.float16,
            "use_cpu": not on_gpu()}


def _ProgressStage(label: str):
    """A trainer callback that reports optimizer steps and the latest loss as a progress stage
    (instead of transformers' dict per step)."""
    from transformers import TrainerCallback

    from interlat_bench.harness.core import progress

    class ProgressStage(TrainerCallback):
        # The loss of a step is logged after its step-end event: a step is counted when its
        # loss arrives (logging_steps=1), so each line shows the loss of the step it counts.
        def on_train_begin(self, args, state, control, **kwargs):
            self.track = progress.track(f"train {label} receiver", state.max_steps)
            self.stage, self.pending = self.track.__enter__(), 0

        def on_step_end(self, args, state, control, **kwargs):
            self.pending += 1

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and self.pending:
                self.stage.advance(self.pending, info=f"loss {float(logs['loss']):.4f}")
                self.pending = 0

        def on_train_end(self, args, state, control, **kwargs):
            if self.pending:
                self.stage.advance(self.pending)
            self.track.__exit__(None, None, None)

    return ProgressStage()


def _fit(module: SlotReceiver, examples: list[Example], cfg: TrainConfig, *, deepspeed, label: str,
         dtype: str = "float32") -> list[dict]:
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from interlat_bench.harness.core import models

    models.import_deepspeed_on_stderr()
    history: list[dict] = []
    curriculum = Curriculum(cfg.curriculum, seed=cfg.seed)

    class InterlatTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inner = model.module if hasattr(model, "module") else model
            total = max(self.state.max_steps, 1)
            inner.ratio = curriculum.ratio(min(self.state.global_step, total - 1), total) \
                if inner.kind is MessageKind.LATENT else 1.0
            loss = model(inputs["examples"])
            history.append({"step": self.state.global_step, **inner.last_parts})
            return loss

        def create_optimizer(self):
            if self.optimizer is None:
                groups = [{"params": [p for p in module.lm.parameters() if p.requires_grad], "lr": cfg.lr}]
                if module.adapter is not None:
                    groups.append({"params": list(module.adapter.parameters()), "lr": cfg.adapter_lr})
                self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
            return self.optimizer

        def _get_train_sampler(self, train_dataset=None):
            if not cfg.group_by_length:
                return super()._get_train_sampler(train_dataset)
            return LengthBatches([sequence_length(ex) for ex in examples], cfg.batch_size, cfg.seed)

        def create_scheduler(self, num_training_steps, optimizer=None):
            # A ratio of the real step count, as an integer: transformers 4.x reads a float
            # `warmup_steps` as a step count, 5.x as a ratio when below 1.
            self.args.warmup_steps = math.ceil(cfg.warmup_ratio * num_training_steps)
            return super().create_scheduler(num_training_steps, optimizer)

    with tempfile.TemporaryDirectory(prefix="interlat-train-") as tmp:
        if deepspeed:
            deepspeed = deepspeed_config(deepspeed, cfg)
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
            num_train_epochs=cfg.epochs, learning_rate=cfg.lr, warmup_steps=0,
            lr_scheduler_type="linear", logging_steps=1, save_strategy="no", report_to=[],
            remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
            seed=cfg.seed, data_seed=cfg.seed,
            **mixed_precision(dtype), deepspeed=deepspeed,
            disable_tqdm=True,
        )
        trainer = InterlatTrainer(model=module, args=args, train_dataset=examples, data_collator=_collate)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_ProgressStage(label))
        # DeepSpeed announces the collective op it builds on stdout: keep results' stdout clean.
        with contextlib.redirect_stdout(sys.stderr) if deepspeed else contextlib.nullcontext():
            trainer.train()
        engine = trainer.model_wrapped
        stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None
        module.engine = {"engine": type(engine).__name__, "zero_stage": stage, "world_size": args.world_size}
    return history


def deepspeed_config(path: str, cfg: TrainConfig) -> dict:
    """The DeepSpeed JSON as a dict; batch fields left "auto" are filled by the HF integration."""
    from interlat_bench.harness.core.errors import UserError

    try:
        ds = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"--deepspeed {path}: expected a readable DeepSpeed JSON config ({e})") from None
    if not isinstance(ds, dict) or "zero_optimization" not in ds:
        raise UserError(f"--deepspeed {path}: expected a JSON object with a zero_optimization section")
    return ds


