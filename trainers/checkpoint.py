"""Trained receivers on disk: where a checkpoint is (its content key), whether it is whole,
how it is written, and loading it back (``Receiver``). Evaluation reads checkpoints through
this module alone; training (``trainers.receiver``) writes them through ``save``."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from interlat_bench.harness.core import conversation as conv
from interlat_bench.harness.core.atomic import atomic_folder
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.trainers.adapter import CommAdapter
from interlat_bench.trainers.config import TrainConfig
from interlat_bench.trainers.slot import slot_rows

TRAIN_VERSION = 2  # 2: supervision ends at the assistant turn's end-of-turn token (conv.encode)


def messages_key(*keys: str | None) -> str | None:
    """The key of the messages a receiver trains on, from its collections' keys: the training
    plans', then the warm-up's further plans' (``TrainConfig.warmup_plans``) where there are any."""
    return "+".join(k for k in keys if k) or None


def training_data_ids(samples) -> list[str]:
    """Each training sample as a receiver's key sees it: its id and a digest of what the receiver
    learns from it (the task and the reference conversation). Ids alone repeat across the settings
    of a generated benchmark: the probe numbers its samples alike at every ``n_facts``,
    ``n_options`` and ``seed``, so a receiver without messages (``no_comm``) trained at one rung
    was found under the same key at another. Settings that leave the conversations alone (the
    sender's view of an ALFWorld game) still share a receiver."""
    def digest(s) -> str:
        blob = json.dumps([s.task, s.data.get("conversation")], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    return [f"{s.id}:{digest(s)}" for s in samples]


def checkpoint_key(receiver_model: str, kind: str, cfg: TrainConfig, data_ids: list[str], messages_key: str | None,
                   dtype: str, sender_dim: int | None, layout: conv.Layout = conv.Layout.SLOT) -> str:
    config = cfg.key_dict()
    for name in ("group_by_length", "detours"):  # absent when off, so earlier receivers' keys still match
        if not config[name]:
            del config[name]
    fields_ = {"v": TRAIN_VERSION, "receiver": receiver_model, "kind": str(kind), "cfg": config,
               "data": hashlib.sha256("\n".join(data_ids).encode()).hexdigest(),
               "messages": messages_key, "dtype": dtype, "sender_dim": sender_dim}
    if layout is not conv.Layout.SLOT:  # absent for SLOT, so the keys of slot receivers stay as they were
        fields_["layout"] = str(layout)
    blob = json.dumps(fields_, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_problem(folder: Path) -> str | None:
    """What is wrong with a saved receiver (an unreadable weights or config file), or None.
    Reads the safetensors headers and the JSON files, not the weights."""
    from safetensors import safe_open

    for path in sorted(Path(folder).rglob("*")):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    if not list(f.keys()):
                        return f"{path.name}: no tensors"
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
        except Exception as exc:  # safetensors and json raise their own types
            return f"{path.relative_to(folder)}: {type(exc).__name__}: {str(exc)[:80]}"
    if not list(Path(folder).rglob("*.safetensors")):
        return "no weights"
    return None


def save(target: Path, lm, adapter, cfg: TrainConfig, kind: str, history: list[dict], receiver_ref: str,
          engine: dict, layout: conv.Layout = conv.Layout.SLOT) -> None:
    with atomic_folder(target, overwrite=True) as tmp:
        lm.model.save_pretrained(tmp / "receiver")
        lm.tokenizer.save_pretrained(tmp / "receiver")
        if adapter is not None:
            adapter.save(tmp / "adapter")
        (tmp / "train_config.json").write_text(json.dumps(
            {"kind": str(kind), "layout": str(layout), "receiver": receiver_ref, "config": asdict(cfg),
             "version": TRAIN_VERSION, "trained_by": engine}, indent=2))
        write_loss_log(tmp, history)
        (tmp / "DONE").write_text("")


def write_loss_log(folder: Path, history: list[dict]) -> None:
    """Per-step loss components as CSV, plus a PNG plot when matplotlib is present."""
    if not history:
        return
    fields = sorted({k for row in history for k in row}, key=lambda k: (k != "step", k))
    with open(folder / "losses.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(history)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in ("total", "ce", "plan", "neg"):
        pts = [(r["step"], r[name]) for r in history if name in r]
        if pts:
            ax.plot(*zip(*pts), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "losses.png", dpi=100)
    plt.close(fig)


def load_train_config(folder: Path) -> tuple[str, TrainConfig]:
    """(kind, TrainConfig) a checkpoint was trained with, from its train_config.json."""
    saved = json.loads((Path(folder) / "train_config.json").read_text())
    known = {f.name for f in fields(TrainConfig)}
    return saved["kind"], TrainConfig(**{k: v for k, v in saved.get("config", {}).items() if k in known})


@dataclass
class Receiver:
    """A trained receiver, loaded: the model, its adapter (latent receivers), what it was
    trained with and the training config (``max_slot_rows`` and the rest evaluation repeats)."""

    lm: Any
    adapter: CommAdapter | None
    kind: MessageKind
    cfg: TrainConfig
    layout: conv.Layout = conv.Layout.SLOT
    folder: Path | None = None  # the checkpoint it was loaded from

    def slot(self, message: Message) -> torch.Tensor | None:
        """What the receiver reads between <bop> and <eop> for ``message``: built by
        ``trainers.slot.slot_rows``, as in training, truncated to the checkpoint's
        ``max_slot_rows``."""
        ids = conv.tokenize(self.lm.tokenizer, message.text or "") if message.kind is MessageKind.TEXT else []
        with torch.no_grad():
            return slot_rows(message.kind, latents=message.latents if message.kind is MessageKind.LATENT else None,
                             plan_ids=ids, adapter=self.adapter, embed=self.lm.model.get_input_embeddings(),
                             max_rows=self.cfg.max_slot_rows, ratio=1.0)


def load_receiver(folder: Path, dtype: str = "float32") -> Receiver:
    """The receiver saved in a checkpoint folder (``train_receiver``'s result)."""
    from interlat_bench.harness.core import models

    lm = models.load(str(folder / "receiver"), dtype=dtype)
    kind, cfg = load_train_config(folder)
    layout = json.loads((Path(folder) / "train_config.json").read_text()).get("layout", "slot")
    adapter = None
    if (folder / "adapter").exists():
        adapter = CommAdapter.load(folder / "adapter", map_location=models.device()).eval()
    return Receiver(lm=lm, adapter=adapter, kind=MessageKind(kind), cfg=cfg, layout=conv.Layout(layout),
                    folder=Path(folder))
