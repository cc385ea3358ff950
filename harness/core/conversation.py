"""Chat prompts with a message slot, shared by training and evaluation.

The first user turn is the benchmark's instruction and task, then SLOT_INTRO and the
slot. A trained receiver reads ``<bop> rows <eop>`` in the slot, where rows are adapter
outputs (latent), plan token embeddings (text) or nothing (no_comm: ``<bop><eop>``, so
the three methods differ only in what fills the slot). An untrained (zero-shot) receiver
has no special tokens: a text plan is written inline and no message leaves the slot out.
"""

from __future__ import annotations

from dataclasses import dataclass

from interlat_bench.harness.core.message import MessageKind

SLOT_INTRO = "Now, you are given a step-by-step plan to complete this task as follow: "
BOP, EOP = "<bop>", "<eop>"
PLACEHOLDER = "\x00SLOT\x00"  # split point in rendered text; never reaches the tokenizer


def with_slot(prompt: str, *, special: bool, message_kind: MessageKind | str, plan_text: str | None = None) -> str:
    """The first user turn's text; PLACEHOLDER marks where slot embeddings go."""
    if special:
        return f"{prompt}\n\n{SLOT_INTRO}{PLACEHOLDER}"
    if MessageKind(message_kind) is MessageKind.TEXT:
        return f"{prompt}\n\n{SLOT_INTRO}{plan_text}"
    return prompt


def render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def tokenize(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass
class Encoded:
    """A conversation as token pieces around the slot: ``before + [slot] + after``.

    ``labels_after`` marks supervised tokens of ``after`` (assistant turns only).
    """

    before: list[int]
    after: list[int]
    labels_after: list[bool]


def encode(tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> Encoded:
    """Tokenise a conversation whose first user turn holds PLACEHOLDER.

    Turn spans come from rendering growing prefixes of the conversation, so any chat
    template works; assistant turns (their content and end-of-turn token) are supervised.
    The end of a turn is its first stop token (``generation.eos_ids``, where decoding stops);
    template text after it (e.g. the newline after ``<|im_end|>``) is context, as it is when
    the receiver plays, so it is not supervised.
    """
    from interlat_bench.harness.core.generation import eos_ids  # torch stays out of plain imports

    stop = eos_ids(tokenizer)
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, msg in enumerate(messages):
        if msg["role"] == "assistant":
            head = render(tokenizer, messages[:i], add_generation_prompt=True)
            pieces.append((head[len(done):], False))
            done = head
        text = render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not text.startswith(done):
            raise ValueError("chat template is not prefix-stable; cannot find turn boundaries")
        pieces.append((text[len(done):], msg["role"] == "assistant"))
        done = text
    if add_generation_prompt:
        full = render(tokenizer, messages, add_generation_prompt=True)
        pieces.append((full[len(done):], False))
    ids: list[int] = []
    labels: list[bool] = []
    slot_at = 0  # no slot (zero-shot, no message): everything is `after`
    for text, supervised in pieces:
        if PLACEHOLDER in text:
            head, text = text.split(PLACEHOLDER, 1)
            ids += tokenize(tokenizer, head)
            labels += [supervised] * (len(ids) - len(labels))
            slot_at = len(ids)
        piece = tokenize(tokenizer, text)
        if supervised:  # through the turn's first stop token; anything after it is context
            end = next((k + 1 for k, t in enumerate(piece) if t in stop), len(piece))
            labels += [True] * end + [False] * (len(piece) - end)
        else:
            labels += [False] * len(piece)
        ids += piece
    return Encoded(before=ids[:slot_at], after=ids[slot_at:], labels_after=labels[slot_at:])


def add_slot_tokens(lm) -> tuple[int, int]:
    """Add <bop>/<eop> as special tokens to a receiver (resizing its embeddings) once."""
    tok = lm.tokenizer
    if BOP not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [BOP, EOP]})
        lm.model.resize_token_embeddings(len(tok), mean_resizing=True)
    return tok.convert_tokens_to_ids(BOP), tok.convert_tokens_to_ids(EOP)
