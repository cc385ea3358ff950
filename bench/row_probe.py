"""Which rows of a latent message hold the probe's facts, and does the adapter get them out?

Run: ``python bench/row_probe.py TRAIN_MESSAGES TEST_MESSAGES [--checkpoint CHECKPOINT]
[--sender smollm2-135m]``, with the sender's plan collections for the probe's training and test
tasks at one rung (``$INTERLAT_CACHE/messages/KEY``) and, optionally, a trained latent
receiver's folder (``$INTERLAT_CACHE/receivers/KEY``).

Row t of a message is the sender state that *predicted* plan token t; row t + 1 is the state
that *read* token t as its input. For the fact tokens (colour words, object names):

1. a linear probe (multinomial logistic regression, fitted on the training plans, scored on the
   test plans) names the token from its own row, from the next row, and from both: where the
   information is, for a reader that can look at either;
2. the sender's own probability of the token it wrote (its LM head on the row; same tokenizer
   only), in three bands: where the sender hesitated, its state holds the candidates;
3. with ``--checkpoint``: how often the adapter's row is nearest (cosine) to its own token's
   embedding, per band; the rows the receiver reads.

Not a test: a diagnostic for one rung's plans and one receiver.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from interlat_bench.benchmarks.probe import COLOURS, OBJECTS
from interlat_bench.collectors.messages import load_messages
from interlat_bench.harness.core import models
from interlat_bench.trainers.checkpoint import load_receiver

BANDS = ((0.0, 0.5), (0.5, 0.9), (0.9, 1.01))


def fact_classes(tok) -> dict[int, str]:
    """Token id -> "colour" or "object" for the probe's one-token fact words (with and without a
    leading space); "object" is the planner prompt's word for the target."""
    out = {}
    for kind, words in (("colour", COLOURS), ("object", (*OBJECTS, "object"))):
        for word in words:
            for form in (" " + word, word):
                ids = tok.encode(form, add_special_tokens=False)
                if len(ids) == 1:
                    out[ids[0]] = kind
    return out


def fact_rows(messages, classes, kind):
    """(own rows, next rows, token ids) of every fact token of ``kind`` that has a next row."""
    own, nxt, ids = [], [], []
    for m in messages.values():
        lat = m.latents.float()
        for i, t in enumerate(m.token_ids[: len(lat) - 1]):
            if classes.get(t) == kind:
                own.append(lat[i])
                nxt.append(lat[i + 1])
                ids.append(t)
    return torch.stack(own), torch.stack(nxt), torch.tensor(ids)


def probe_accuracy(train_x, train_y, test_x, test_y, l2: float = 1e-3) -> float:
    """Held-out accuracy of a multinomial logistic regression (standardised features, L2,
    full-batch L-BFGS): what a linear reader of these rows can name."""
    labels = torch.unique(train_y)
    y = torch.searchsorted(labels, train_y)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = (train_x - mean) / std
    w = torch.zeros(x.shape[1], len(labels), requires_grad=True)
    b = torch.zeros(len(labels), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        guess = labels[(((test_x - mean) / std) @ w + b).argmax(-1)]
    return float((guess == test_y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("train", type=Path)
    ap.add_argument("test", type=Path)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--sender", default="smollm2-135m")
    args = ap.parse_args()

    train, test = load_messages(args.train), load_messages(args.test)
    sender = models.load(args.sender, dtype="float32")
    classes = fact_classes(sender.tokenizer)
    torch.manual_seed(0)
    print("linear probe, training plans -> test plans (fact tokens that have a next row):")
    for kind in ("colour", "object"):
        a_own, a_next, a_y = fact_rows(train, classes, kind)
        b_own, b_next, b_y = fact_rows(test, classes, kind)
        cells = [f"{name} {probe_accuracy(a, a_y, b, b_y):6.1%}" for name, a, b in
                 (("own row", a_own, b_own), ("next row", a_next, b_next),
                  ("both", torch.cat([a_own, a_next], 1), torch.cat([b_own, b_next], 1)))]
        print(f"  {kind:6s} (train {len(a_y)}, test {len(b_y)}): " + ", ".join(cells))

    head = sender.model.get_output_embeddings().weight.detach().float()
    receiver = load_receiver(args.checkpoint) if args.checkpoint else None
    if receiver is not None:
        table = receiver.lm.model.get_input_embeddings().weight.detach().float()
        unit = torch.nn.functional.normalize(table, dim=-1)
    counts: dict[tuple[str, int], list[int]] = {}
    with torch.no_grad():
        for m in test.values():
            lat = m.latents.float()
            ids = torch.tensor(m.token_ids[: len(lat)])
            p_own = torch.softmax(lat @ head.T, -1)[torch.arange(len(ids)), ids]
            right = None
            if receiver is not None:
                rows = receiver.slot(m).float()
                right = (torch.nn.functional.normalize(rows, dim=-1) @ unit.T).argmax(-1) == ids[: len(rows)]
            for i, t in enumerate(ids.tolist()):
                kind = classes.get(t)
                if kind is None or (right is not None and i >= len(right)):
                    continue
                band = next(k for k, (lo, hi) in enumerate(BANDS) if lo <= float(p_own[i]) < hi)
                c = counts.setdefault((kind, band), [0, 0])
                c[0] += 1
                c[1] += int(right[i]) if right is not None else 0
    print("the sender's probability of the fact token it wrote (test plans)"
          + ("; the adapter's row nearest its own token:" if receiver else ":"))
    for (kind, band), (n, hit) in sorted(counts.items()):
        lo, hi = BANDS[band]
        row = f"  {kind:6s} p in [{lo:.1f}, {min(hi, 1.0):.1f}{']' if hi > 1 else ')'}: {n:5d} rows"
        print(row + (f", adapter nearest own {hit / n:6.1%}" if receiver else ""))


if __name__ == "__main__":
    main()
