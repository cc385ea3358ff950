"""Where a latent receiver loses the probe's answer: its rows, or its reading of them?

Run: ``python bench/probe_slot_swap.py CHECKPOINT MESSAGES --facts F --options O
[--slots rows,text,snap,snap_right]``, with CHECKPOINT a trained latent receiver's folder
(``$INTERLAT_CACHE/receivers/KEY``, named in ``run``'s log) and MESSAGES the sender's
collection of the probe's test split at that rung (``$INTERLAT_CACHE/messages/KEY``).

Plays every test sample with the same trained receiver and the same sender messages, changing
only what fills its slot:

- ``rows``: the adapter's rows, as ``run`` evaluates it (the numbers must match the run's);
- ``snap_right``: rows that are already their plan token's nearest embedding replaced by that
  embedding, the others left as they are (what the rows' imprecision costs);
- ``snap``: every row replaced by its nearest token embedding (adds what wrong rows cost);
- ``text``: the plan's own token embeddings (what this receiver can read at best).

Prints accuracy and fidelity (accuracy where the plan states the target's own fact) per slot,
with n, and fidelity on the plans that also give another object another colour
(``distractor_in_plan``) apart. Not a test: a diagnostic for one trained receiver.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from interlat_bench.benchmarks.probe import ProbeBenchmark, states_distractor, states_fact
from interlat_bench.collectors.messages import load_messages
from interlat_bench.harness.core.generation import Decoding
from interlat_bench.harness.core.message import Message, MessageKind
from interlat_bench.methods.agents import ReceiverAgent
from interlat_bench.trainers.checkpoint import load_receiver


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("messages", type=Path)
    ap.add_argument("--facts", type=int, default=1)
    ap.add_argument("--options", type=int, default=4)
    ap.add_argument("--slots", default="rows,snap_right,snap,text")
    args = ap.parse_args()

    receiver = load_receiver(args.checkpoint)
    if receiver.adapter is None:
        raise SystemExit(f"{args.checkpoint}: not a latent receiver (no adapter)")
    messages = load_messages(args.messages)
    bench = ProbeBenchmark({"n_facts": args.facts, "n_options": args.options})
    table = receiver.lm.model.get_input_embeddings().weight.detach().float()
    unit = torch.nn.functional.normalize(table, dim=-1)

    def nearest(rows: torch.Tensor) -> torch.Tensor:
        return (torch.nn.functional.normalize(rows, dim=-1) @ unit.T).argmax(-1)

    def snap_right(m: Message) -> torch.Tensor:
        rows = receiver.slot(m).clone()
        ids = torch.tensor(m.token_ids[: len(rows)])
        right = nearest(rows) == ids
        rows[right] = table[ids[right]].to(rows.dtype)
        return rows

    slots = {
        "rows": receiver.slot,
        "snap_right": snap_right,
        "snap": lambda m: table[nearest(receiver.slot(m))],
        "text": lambda m: receiver.slot(Message(kind=MessageKind.TEXT, text=m.text)),
    }
    samples = bench.samples("test")
    missing = [s.id for s in samples if s.id not in messages]
    if missing:
        raise SystemExit(f"{args.messages}: no message for {len(missing)} test samples (e.g. {missing[0]}): "
                         f"another rung's collection?")
    for name in args.slots.split(","):
        agent = ReceiverAgent(receiver.lm, Decoding(greedy=True, max_new_tokens=bench.reply_tokens),
                              slot_encoder=slots[name])
        solved, fidelity = 0, {True: [], False: []}  # by whether the plan has a distractor
        for s in samples:
            m = messages[s.id]
            with torch.no_grad():
                ok = bench.play(s, agent, m).success
            solved += ok
            if states_fact(m.text, s):
                fidelity[states_distractor(m.text, s)].append(ok)
        stated = fidelity[True] + fidelity[False]
        print(f"{name:>10}: accuracy {solved}/{len(samples)} = {solved / len(samples):.1%}, "
              f"fidelity {sum(stated)}/{len(stated)} = {sum(stated) / max(len(stated), 1):.1%} "
              f"(with a distractor {sum(fidelity[True])}/{len(fidelity[True])}, "
              f"without {sum(fidelity[False])}/{len(fidelity[False])})", flush=True)


if __name__ == "__main__":
    main()
