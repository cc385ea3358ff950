"""Chat prompts with a message slot, shared by training and evaluation.

Where the receiver reads the message is its ``Layout``:
- SLOT (trained two-agent receivers): the first user turn is the benchmark's instruction
  and task, then SLOT_INTRO and ``<bop> rows <eop>``, where rows are adapter outputs
  (latent), plan token embeddings (text) or nothing (no_comm: ``<bop><eop>``), so the three
  methods differ only in what fills the slot;
- INLINE (zero-shot receivers, the single agent without a plan): no special tokens; a text
  plan is written after SLOT_INTRO, embedding rows (CIPHER) stand there instead of its
  tokens, no message leaves the prompt as it is;
- OWN_PLAN (the single agent that plans, cot_full): its own earlier exchange, the planner
  prompt and its plan, precedes the task; the plan turn is context, never supervised.
"""

from __future__ import annotations

from dataclasses import dataclass

from interlat_bench.harness.core.message import MessageKind, ValueEnum
from interlat_bench.harness.core.prompts import planner_turns

SLOT_INTRO = "Now, you are given a step-by-step plan to complete this task as follow: "
BOP, EOP = "<bop>", "<eop>"
PLACEHOLDER = "\x00SLOT\x00"  # split point in rendered text; never reaches the tokenizer


class Layout(ValueEnum):
    SLOT = "slot"
    INLINE = "inline"
    OWN_PLAN = "own_plan"


def opening(prompt: str, layout: Layout | str, *, message_kind: MessageKind | str, plan_text: str | None = None,
            task: str | None = None, plan_prompt: str | None = None) -> list[dict]:
    """The conversation's first turns for a receiver in ``layout``. PLACEHOLDER marks where
    the slot goes (SLOT) or where the acting part begins (OWN_PLAN: what precedes it is
    context that training never truncates)."""
    layout = Layout(layout)
    if layout is Layout.OWN_PLAN:
        if plan_prompt is None or task is None:
            raise ValueError("an own-plan opening needs the planner prompt and the task")
        return [*({**turn, "context": True} for turn in planner_turns(plan_prompt, task)),
                {"role": "assistant", "content": plan_text or "", "context": True},
                {"role": "user", "content": PLACEHOLDER + prompt}]
    return [{"role": "user", "content": with_slot(prompt, special=layout is Layout.SLOT,
                                                  message_kind=message_kind, plan_text=plan_text)}]


def with_slot(prompt: str, *, special: bool, message_kind: MessageKind | str, plan_text: str | None = None) -> str:
    """The first user turn's text; PLACEHOLDER marks where slot embeddings go."""
    if special or MessageKind(message_kind) is MessageKind.EMBEDDINGS:  # rows go where the plan text would
        return f"{prompt}\n\n{SLOT_INTRO}{PLACEHOLDER}"
    if MessageKind(message_kind) is MessageKind.TEXT:
        return f"{prompt}\n\n{SLOT_INTRO}{plan_text}"
    return prompt


def render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    plain = [{k: v for k, v in m.items() if k != "context"} for m in messages]
    return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=add_generation_prompt)


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
    template works; assistant turns (their content and end-of-turn token) are supervised,
    except those marked ``"context": True`` (a single agent's own plan).
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
        pieces.append((text[len(done):], msg["role"] == "assistant" and not msg.get("context")))
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


def turn_end_id(tokenizer) -> int | None:
    """The stop token that closes an assistant turn in this chat template (``<|im_end|>`` for
    SmolLM2, ``<end_of_turn>`` for Gemma): the token ``encode`` supervises last."""
    from interlat_bench.harness.core.generation import eos_ids

    head = render(tokenizer, [{"role": "user", "content": "x"}], add_generation_prompt=True)
    full = render(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                  add_generation_prompt=False)
    stop = eos_ids(tokenizer)
    return next((t for t in tokenize(tokenizer, full[len(head):]) if t in stop), None)


def add_slot_tokens(lm) -> tuple[int, int]:
    """Add <bop>/<eop> as special tokens to a receiver (resizing its embeddings) once."""
    tok = lm.tokenizer
    if BOP not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [BOP, EOP]})
        lm.model.resize_token_embeddings(len(tok), mean_resizing=True)
    return tok.convert_tokens_to_ids(BOP), tok.convert_tokens_to_ids(EOP)
