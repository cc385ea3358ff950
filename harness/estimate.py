"""`run --dry-run --estimate`: the predicted time of each stage of a grid on a device, from the
per-token costs ``bench/paper_scale.py`` measured there and stored (``Costs``).

What is counted, per cell, as the driver would run it (a stage already in the cache, or built
by an earlier cell of the grid, costs nothing):
- plans: generated plan tokens, each to the plan's token cap, at the collector's batch;
- receiver training: the training conversations' tokens (the receiver's tokenizer, each cut at
  ``max_len``) plus the slot's rows, times the epochs, through a forward and backward pass (a
  latent receiver's adds no-grad forward passes for the plan and separation losses, a third of
  a token's cost each), and one optimizer update a step;
- student training (compressed_k): the same tokens through the student sender and the receiver;
- messages: latent steps (and a training-free sender's prompt) at batch 1;
- evaluation: every reply to its token cap and every episode to its step limit (upper bounds).
Every cost is scaled from the model it was measured on by parameter count: decoding at a batch
and a training step both cost about 2 (or 6) FLOPs, or one read of the weights, per parameter.
Not counted: model loading, a game engine's own time, the adapter warm-up. Across N devices
(torchrun), collection, training and evaluation are split N ways; a training-free family's
sender pass is not (every rank sends all of a cell's tasks).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from interlat_bench.harness.core import atomic, models
from interlat_bench.harness.core.conversation import Layout
from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.registry import benchmarks
from interlat_bench.harness.core.settings import cache_dir
from interlat_bench.harness.core.stages import LatentSteps, PlanCollection, SenderPass
from interlat_bench.harness.grid import swept_params
from interlat_bench.harness.playing import EPISODE_BATCH, EVAL_BATCH

COSTS_VERSION = 2  # 2: the optimizer's update apart from the tokens' forward-backward
DEVICES = (1, 2, 4, 8)  # the device counts the estimate is shown for
TURN_TOKENS = 8  # chat-template tokens around each turn of a training conversation


@dataclass(frozen=True)
class Costs:
    """Seconds per unit of work on one device, each measured on a model of ``parameters``
    (training: ``train_parameters``) by ``bench/paper_scale.py``."""

    device: str
    dtype: str
    parameters: int
    train_parameters: int
    plan_token_s: dict[int, float]   # collector batch -> seconds per generated plan token
    latent_step_s: float             # one latent step of one task at batch 1 (prompt included)
    reply_token_s: dict[int, float]  # games decoded together -> seconds per reply token per game
    train_token_s: float             # one token through a fine-tuning step's forward and backward
    optimizer_step_s: float          # AdamW's update of every weight, once a step
    measured: str = ""               # when and on what shape
    version: int = COSTS_VERSION

    @property
    def gpu(self) -> bool:
        return not self.device.startswith("CPU")

    @staticmethod
    def at_batch(table: dict[int, float], batch: int) -> float:
        """The cost at the measured batch nearest below ``batch`` (the smallest if none)."""
        below = [b for b in table if b <= batch]
        return table[max(below) if below else min(table)]

    @classmethod
    def from_report(cls, report: dict[str, Any], train_stage: str) -> Costs:
        """The per-token costs in ``bench/paper_scale.py``'s report (``train_stage``: the name of
        its training entry, which must have fitted)."""
        coll, comm, recv, train = (report[k] for k in ("collection", "communication", "receiver", train_stage))
        if "tokens/s" not in train:
            raise UserError(f"{train_stage}: {train.get('does not fit', 'no step measured')}")
        k = next(int(m.group(1)) for key in comm if (m := re.fullmatch(r"K=(\d+) untrained s/task", key)))
        reply = {int(m.group(1)): v / 1000 for key, v in recv.items()
                 if (m := re.fullmatch(r"lockstep (\d+) games: ms per reply token per game", key))}
        return cls(device=report["device"], dtype=report["dtype"],
                   parameters=report["load"].get("parameters", round(report["load"]["parameters (B)"] * 1e9)),
                   train_parameters=train.get("parameters", round(train["parameters (B)"] * 1e9)),
                   plan_token_s={int(m.group(1)): 1 / v for key, v in coll.items()
                                 if (m := re.fullmatch(r"collector batch (\d+) tokens/s", key))},
                   latent_step_s=comm[f"K={k} untrained s/task"] / k, reply_token_s=reply,
                   train_token_s=1 / train["forward-backward tokens/s"], optimizer_step_s=train["optimizer step s"],
                   measured=f"{report['date']}, {report['shape']}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> Costs:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("version") != COSTS_VERSION:
                raise ValueError(f"version {data.get('version')}, expected {COSTS_VERSION}")
            for name in ("plan_token_s", "reply_token_s"):
                data[name] = {int(b): float(s) for b, s in data[name].items()}
            return cls(**data)
        except FileNotFoundError:
            raise UserError(f"{path}: no stored costs for this device: run `python bench/paper_scale.py` here "
                            "first (about 3 minutes on a CPU), or give --costs FILE from another device") from None
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise UserError(f"{path}: not a costs file of bench/paper_scale.py ({exc})") from None


def this_device() -> str:
    """The device as the costs name it: the GPU's name, or the CPU and its cores."""
    import torch

    return torch.cuda.get_device_name() if models.on_gpu() else f"CPU ({os.cpu_count()} cores)"


def costs_path(device: str) -> Path:
    return cache_dir() / "costs" / (re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") + ".json")


def store(costs: Costs) -> Path:
    """Write ``costs`` where ``--estimate`` looks for its device's (whole or not at all)."""
    path = costs_path(costs.device)
    atomic.write_text(path, json.dumps(costs.to_json(), indent=1) + "\n")
    return path


@dataclass
class StageTime:
    """One stage of one cell: what it computes and its seconds on one device."""

    cell: str
    stage: str
    work: str
    seconds: float
    splits: bool = True  # shared out across devices under torchrun
    note: str = ""

    def on(self, devices: int) -> float:
        return self.seconds / devices if self.splits else self.seconds


@dataclass
class Estimate:
    costs: Costs
    stages: list[StageTime] = field(default_factory=list)

    def total(self, devices: int = 1) -> float:
        return sum(s.on(devices) for s in self.stages)


class _Grid:
    """Sizes, tokenizers and stages already counted, shared by the cells of one estimate."""

    def __init__(self, costs: Costs):
        self.costs = costs
        self.sizes: dict[str, models.Size] = {}
        self.tokenizers: dict[str, Any] = {}
        self.seen: set[str] = set()  # cache keys of stages an earlier cell builds
        self.epochs: dict[str, int] = {}  # receiver key -> tokens of one epoch

    def size(self, ref: str) -> models.Size:
        if ref not in self.sizes:
            self.sizes[ref] = models.size(ref)
        return self.sizes[ref]

    def scale(self, ref: str, training: bool = False) -> float:
        measured = self.costs.train_parameters if training else self.costs.parameters
        return self.size(ref).parameters / measured

    def tokens(self, ref: str, text: str) -> int:
        if ref not in self.tokenizers:
            self.tokenizers[ref] = models.tokenizer(ref)
        return len(self.tokenizers[ref](text, add_special_tokens=False).input_ids)

    def epoch_tokens(self, key: str, ref: str, train, cfg, rows: int) -> int:
        """Tokens of one epoch of the training set of receiver ``key``: each conversation cut at
        ``max_len``, plus the slot's ``rows`` (<bop> rows <eop>); tokenised once per grid."""
        if key not in self.epochs:
            self.epochs[key] = sum(rows + min(cfg.max_len, sum(self.tokens(ref, t["content"]) + TURN_TOKENS
                                                               for t in s.data["conversation"])) for s in train)
        return self.epochs[key]

    def first(self, key: str) -> bool:
        """Whether the stage of cache key ``key`` is counted here (not by an earlier cell)."""
        new = key not in self.seen
        self.seen.add(key)
        return new


def estimate(plans, costs: Costs) -> Estimate:
    """The stages of every cell of ``plans`` (``runner.plan_grid``'s) that a run would compute."""
    grid, out = _Grid(costs), Estimate(costs)
    swept = swept_params([p.spec for p in plans])
    for plan in plans:
        if plan.total > plan.done:  # a finished cell builds nothing
            out.stages.extend(_cell(grid, plan.spec, plan.total - plan.done, _label(plan.spec, swept)))
    return out


def _label(spec, swept: set[str]) -> str:
    """The cell's name: its method with the parameters its grid sweeps, benchmark, split, seed."""
    params = ", ".join(f"{k}={v}" for k, v in spec.method_params if k in swept)
    return f"{spec.method}{f'[{params}]' if params else ''} {spec.benchmark}/{spec.split} seed {spec.seed}"


def _cell(grid: _Grid, spec, todo: int, label: str) -> list[StageTime]:
    from interlat_bench.collectors.messages import collection_path, stored_ids
    from interlat_bench.collectors.plans import collect_config
    from interlat_bench.trainers.checkpoint import checkpoint_key, training_data_ids
    from interlat_bench.trainers.checkpoint import messages_key as plans_messages_key
    from interlat_bench.trainers.compression import CompressConfig, student_key
    from interlat_bench.trainers.config import TrainConfig

    costs, out = grid.costs, []
    bench = benchmarks.get(spec.benchmark)(dict(spec.benchmark_params))
    samples = bench.samples(spec.split, spec.limit)

    def plans_stage(stage: PlanCollection, tasks, what: str) -> str:
        """Count the plans of ``tasks`` not in the cache; the collection's key."""
        cfg = collect_config(stage)
        path = collection_path(cfg, tasks)
        if grid.first(path.name):
            missing = len({t for t, _ in tasks} - stored_ids(path))
            length = cfg.effective_decoding().max_new_tokens
            if missing:
                out.append(StageTime(label, what, f"{missing} plans x {length} tokens",
                                     missing * length * costs.at_batch(costs.plan_token_s, cfg.batch_size)
                                     * grid.scale(stage.sender_model)))
        return path.name

    receiver_key = training = None
    stage = spec.stages.receiver_training
    if stage is not None:
        cfg = TrainConfig(**stage.config())
        train = bench.train_samples(limit=cfg.n_train, detours=cfg.detours)
        further = bench.warmup_samples(train, cfg.warmup_plans) if stage.plans else []
        messages_key = plans_messages_key(
            plans_stage(stage.plans, bench.sender_tasks(train), "training plans") if stage.plans else None,
            plans_stage(stage.plans, bench.sender_tasks(further), "warm-up plans") if further else None)
        latent = stage.layout is Layout.SLOT and stage.kind is MessageKind.LATENT
        sender_dim = grid.size(stage.sender_model or spec.sender_model).hidden_size if latent else None
        receiver_key = checkpoint_key(stage.receiver_model, stage.kind, cfg, training_data_ids(train), messages_key,
                                      stage.dtype, sender_dim, stage.layout)
        rows = 2 + (min(stage.plans.max_new_tokens, cfg.max_slot_rows) if stage.plans else 0)
        training = (cfg, train, messages_key, lambda: grid.epoch_tokens(receiver_key, stage.receiver_model, train, cfg, rows))
        if grid.first(receiver_key) and not (cache_dir() / "receivers" / receiver_key / "DONE").exists():
            per_epoch = training[3]()
            # A gradient-free pass costs about a third of a trained one (forward only);
            # the plan pass is a trained one when it has a CE of its own (plan_ce_weight).
            plan_pass = 1 if cfg.plan_ce_weight > 0 else 1 / 3
            passes = 1 + (plan_pass + (1 / 3 if cfg.neg_weight > 0 else 0) if latent else 0)
            steps = math.ceil(len(train) / (cfg.batch_size * cfg.grad_accum)) * cfg.epochs
            out.append(StageTime(label, "receiver training",
                                 f"{len(train)} conversations x {cfg.epochs:g} epochs, {per_epoch} tokens an epoch, "
                                 f"{steps:g} steps", (per_epoch * cfg.epochs * passes * costs.train_token_s
                                                      + steps * costs.optimizer_step_s)
                                 * grid.scale(stage.receiver_model, training=True)))
    messages = spec.stages.messages
    steps_s = costs.latent_step_s
    if isinstance(messages, PlanCollection):
        plans_stage(messages, bench.sender_tasks(samples), "evaluation plans")
    elif isinstance(messages, LatentSteps):
        if messages.student is not None and training is not None:
            s, (cfg, train, messages_key, epoch_tokens) = messages.student, training
            student = CompressConfig(k=s.k, epochs=s.epochs, lr=s.lr, head_lr=s.head_lr,
                                     batch_size=cfg.batch_size, seed=cfg.seed)
            key = student_key(cache_dir() / "receivers" / receiver_key, student, [x.id for x in train],
                              messages_key, spec.dtype)
            if grid.first(key) and not (cache_dir() / "students" / key / "DONE").exists():
                steps, per_epoch = math.ceil(len(train) / student.batch_size) * s.epochs, epoch_tokens()
                out.append(StageTime(label, "student training", f"{len(train)} conversations x {s.epochs:g} epochs",
                                     per_epoch * s.epochs * costs.train_token_s
                                     * (grid.scale(messages.sender_model, True) + grid.scale(stage.receiver_model, True))
                                     + steps * costs.optimizer_step_s * grid.scale(messages.sender_model, True)))
        out.append(StageTime(label, "messages", f"{len(samples)} tasks x {messages.k} latent steps",
                             len(samples) * messages.k * steps_s * grid.scale(messages.sender_model)))
    elif isinstance(messages, SenderPass):
        settings = dict(messages.settings)
        steps = int(settings.get("latent_steps") or settings.get("max_new_tokens") or 0) + 1
        tasks = len(samples) + messages.calibration
        out.append(StageTime(label, "messages", f"{tasks} tasks x {steps} sender steps ({messages.family})",
                             tasks * steps * steps_s * grid.scale(messages.sender_model), splits=False,
                             note="not split across devices"))
    if spec.receiver_model is not None and samples:
        prompts = [bench.single_reply_prompt(x) for x in samples]
        single = prompts[0] is not None
        games = min(todo, EVAL_BATCH if single else EPISODE_BATCH["cuda" if costs.gpu else "cpu"])
        replies = todo * (1 if single else bench.max_turns)
        seconds = replies * spec.decoding.max_new_tokens * costs.at_batch(costs.reply_token_s, games) \
            * grid.scale(spec.receiver_model)
        work = f"{replies} replies x {spec.decoding.max_new_tokens} tokens ({games} at once)"
        if single:  # one reply to one prompt: reading the prompt and the message's rows is a forward
            # pass over them, a third of a training step's cost a token (a multi-turn reply's
            # observation is short beside its step limit's bound).
            rows = messages.max_new_tokens if isinstance(messages, PlanCollection) \
                else messages.k if isinstance(messages, LatentSteps) else 0
            read = round(todo * (rows + sum(grid.tokens(spec.receiver_model, p) for p in prompts) / len(prompts)))
            seconds += read * costs.train_token_s / 3 * grid.scale(spec.receiver_model, training=True)
            work += f", {read} prompt tokens read"
        out.append(StageTime(label, "evaluation", work, seconds))
    return out


def stored_costs(path: Path | None) -> Costs:
    """The costs in ``path``, or those stored for this machine's device."""
    return Costs.read(path or costs_path(this_device()))
