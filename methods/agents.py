"""The LLM receiver as an agent: chat turns with a message slot, decoded with a KV cache.

Each ``respond`` feeds only what is new since the last reply (the reply's final token,
the closing of the turn and the new observation) on top of the cached keys/values, instead
of re-encoding the whole history. ``reencode=True`` keeps the naive path for comparison.
On single-reply benchmarks (MATH, probe) ``prefetch`` decodes several episodes' replies in
one batch ahead of their ``begin``/``respond``. On multi-turn benchmarks (ALFWorld)
``respond_together`` plays a turn of several episodes, each with its own agent
(``sibling``), their replies decoded in one batch on a KV cache they share.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from interlat_bench.benchmarks.base import Sample
from interlat_bench.harness.core import conversation as conv
from interlat_bench.harness.core.generation import (
    Decoding,
    extend_logits,
    generate,
    score_continuations,
)
from interlat_bench.harness.core.kv_cache import windowed
from interlat_bench.harness.core.seeds import item_seed
from interlat_bench.harness.core.timing import clock_ms
from interlat_bench.methods.base import Message, MessageKind

# Stored transcripts stay bounded (about 100 KB per episode at most).
TRANSCRIPT_TURNS = 100
TRANSCRIPT_TURN_CHARS = 4000

# message -> slot rows (n, H_receiver) placed between <bop> and <eop>
SlotEncoder = Callable[[Message], torch.Tensor | None]

# What ``begin`` sets: an episode's state, kept per episode while its reply is prefetched.
_EPISODE_STATE = ("messages", "history_ids", "_times", "replies", "truncated_replies", "pending", "history",
                  "past", "last_reply_ids", "generator", "turns", "eval_batch")


@dataclass
class _Prefetched:
    prompt: str
    state: dict
    reply_ids: list[int] = field(default_factory=list)
    ms: float = 0.0
    first_token_ms: float = 0.0
    batch: int = 1


@dataclass
class _Lockstep:
    """Episodes whose turns are decoded together: one KV cache with a row per episode.

    ``mask`` (rows x cache length) is 0 where a row holds no token: the left padding of the
    first turn, and the gaps each later turn leaves in the rows whose new input or reply was
    shorter than the longest. Positions follow the mask, so a gap changes nothing a row reads.
    """

    cache: object
    mask: torch.Tensor
    agents: list


def _right_aligned(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Embedding rows (n_i x H) as one left-padded batch (B x max n_i x H) and its mask."""
    width = max(len(r) for r in rows)
    x = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=x.device)
    for i, r in enumerate(rows):
        x[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return x, mask


class ReceiverAgent:
    needs_expert = False  # an LLM acts on what it reads, not on the expert's action

    def __init__(self, lm, decoding: Decoding, *, seed: int = 0, slot_encoder: SlotEncoder | None = None,
                 layout: conv.Layout | None = None, plan_prompt: str | None = None, reencode: bool = False):
        """``slot_encoder``: a slot receiver's message -> rows (``layout`` SLOT); without one the
        receiver reads INLINE, or OWN_PLAN (a single agent's own plan turn from ``plan_prompt``)."""
        self.lm = lm
        self.tok = lm.tokenizer
        self.dec = decoding
        self.seed = seed
        self.special = slot_encoder is not None  # trained slot receivers read <bop> rows <eop>
        self.layout = conv.Layout.SLOT if self.special else conv.Layout(layout or conv.Layout.INLINE)
        self.plan_prompt = plan_prompt
        self.slot_encoder = slot_encoder
        self.reencode = reencode
        self.eos = lm.stop_ids
        self._prefetched: dict[str, _Prefetched] = {}
        self._ready: _Prefetched | None = None
        self.turn_end = conv.turn_end_id(self.tok)  # what ends a reply in training, so in ranking too
        self._embed = lm.model.get_input_embeddings()

    # -- episode -------------------------------------------------------------------------
    def begin(self, prompt: str, message: Message, sample: Sample) -> None:
        ready = self._prefetched.pop(sample.id, None)
        if ready is not None and ready.prompt == prompt:
            for name, value in ready.state.items():
                setattr(self, name, value)
            self._ready = ready
            return
        self._ready = None
        self._open(prompt, message, sample)

    def prefetch(self, episodes: list[tuple[str, Message, Sample]]) -> None:
        """Decode the first replies of ``episodes`` (prompt, message, sample) in one
        left-padded batch; each episode's ``begin`` and first ``respond`` then take its reply
        instead of decoding it alone. Each row samples from its own seeded generator, so it
        gets the reply it would get alone (greedy: up to the float rounding of a padded
        batch). The reply's receiver time is the whole batch's, as the episode waited for it;
        ``episode_metrics`` reports the batch size as ``eval_batch``."""
        self._prefetched.clear()  # a reply never taken (its episode failed first) goes
        starts = []
        for prompt, message, sample in episodes:
            self._open(prompt, message, sample)
            starts.append(_Prefetched(prompt, {name: getattr(self, name) for name in _EPISODE_STATE}))
        rows = [ready.state["pending"] for ready in starts]
        x, mask = _right_aligned(rows)
        t0 = clock_ms()
        out = generate(self.lm.model, eos_ids=self.eos, dec=self.dec, inputs_embeds=x, attention_mask=mask,
                       generator=None if self.dec.greedy else [r.state["generator"] for r in starts])
        ms = clock_ms() - t0
        for (_, _, sample), ready, ids in zip(episodes, starts, out.token_ids, strict=True):
            ready.reply_ids, ready.ms, ready.first_token_ms, ready.batch = ids, ms, out.first_token_ms, len(rows)
            self._prefetched[sample.id] = ready

    def sibling(self) -> ReceiverAgent:
        """A fresh agent on the same receiver and settings (no copy of the model), for an
        episode played alongside this one's (``respond_together``)."""
        twin = copy.copy(self)
        twin._prefetched, twin._ready = {}, None
        return twin

    def can_respond_together(self) -> bool:
        """Whether ``respond_together`` may batch this receiver's turns: not for a model with
        sliding-window layers, as the gaps a shared cache leaves in its rows would narrow
        the window (those play one episode at a time)."""
        return not windowed(self.lm.model.config)

    @staticmethod
    def respond_together(agents: Sequence[ReceiverAgent], observations: Sequence[str | None]) -> list[str]:
        """One turn of several episodes, one per agent (``sibling``s, each after its own
        ``begin``): what ``agent.respond(observation)`` does for each, with their replies
        decoded in one left-padded batch on a KV cache the episodes share from their first
        turn on. Each row samples from its own seeded generator, so each reply is the one its
        episode gets alone (greedy: up to the float rounding of a padded batch). Call it each
        turn with the episodes still playing: the rows of the others leave the cache. Each
        reply's receiver time is the batch's, as its episode waited for it; an episode that
        goes on alone afterwards (``respond``) re-encodes its history once.
        """
        if len(agents) != len(observations):
            raise ValueError(f"{len(agents)} agents for {len(observations)} observations")
        if not agents[0].can_respond_together():
            raise ValueError("respond_together: the receiver has sliding-window layers; play its episodes one at a time")
        shared = agents[0].past if isinstance(agents[0].past, _Lockstep) else None
        if any(a.past is not shared or a.reencode or a._ready is not None for a in agents):
            raise ValueError("respond_together: every agent must be on its first turn (no prefetched reply, "
                             "not re-encoding) or have played its turns together with the others")
        for agent, observation in zip(agents, observations, strict=True):
            if observation is not None:
                agent._add_user(observation)
        if shared is not None and shared.agents != list(agents):  # episodes that ended leave
            keep = torch.tensor([shared.agents.index(a) for a in agents], device=shared.mask.device)
            shared.cache.batch_select_indices(keep)
            shared.mask = shared.mask[keep]
        first = agents[0]
        x, new = _right_aligned([a.pending for a in agents])  # each row's reply follows its input
        mask = new if shared is None else torch.cat([shared.mask, new], dim=-1)
        t0 = clock_ms()
        out = generate(first.lm.model, eos_ids=first.eos, dec=first.dec, inputs_embeds=x, attention_mask=mask,
                       past_key_values=None if shared is None else shared.cache, drop_finished=False,
                       generator=None if first.dec.greedy else [a.generator for a in agents],
                       context_ids=first.history_ids if len(agents) == 1 else None)
        ms = clock_ms() - t0
        shared = _Lockstep(out.past_key_values, out.attention_mask, list(agents))
        replies = []
        for agent, ids in zip(agents, out.token_ids, strict=True):
            agent._times["receiver"] += ms
            agent.last_first_token_ms = out.first_token_ms
            agent.eval_batch = max(agent.eval_batch, len(agents))
            agent.truncated_replies += len(ids) >= agent.dec.max_new_tokens and (not ids or ids[-1] not in agent.eos)
            replies.append(agent._take_reply(ids, shared, unfed=1))
        return replies

    def _leave_lockstep(self) -> None:
        """The shared cache of ``respond_together`` is not this episode's alone: go on from
        a re-encode of the history (the queued input then holds all of it)."""
        if isinstance(self.past, _Lockstep):
            self.past, self.pending = None, self.history

    def _open(self, prompt: str, message: Message, sample: Sample) -> None:
        self.messages = conv.opening(prompt, self.layout, message_kind=message.kind, plan_text=message.text,
                                     task=sample.task, plan_prompt=self.plan_prompt)
        enc = conv.encode(self.tok, self.messages, add_generation_prompt=True)
        parts = [self._ids(enc.before)]
        # Token ids of the whole history (-1 for slot rows): prompt lookup drafts from them.
        self.history_ids = list(enc.before)
        t0 = clock_ms()
        if self.special:
            bop, eop = (self.tok.convert_tokens_to_ids(t) for t in (conv.BOP, conv.EOP))
            rows = self.slot_encoder(message)
            parts += [self._ids([bop])] + ([rows.to(parts[0].dtype)] if rows is not None else []) + \
                [self._ids([eop])]
            self.history_ids += [bop] + [-1] * (len(rows) if rows is not None else 0) + [eop]
        elif message.kind is MessageKind.EMBEDDINGS and message.latents is not None:
            # Rows already in this model's input-embedding space (CIPHER), where the plan's tokens would be.
            parts.append(message.latents.to(parts[0].device, parts[0].dtype))
            self.history_ids += [-1] * len(message.latents)
        self._times = {"adapter": clock_ms() - t0, "receiver": 0.0}
        self.replies = self.truncated_replies = 0
        parts.append(self._ids(enc.after))
        self.history_ids += list(enc.after)
        self.pending = torch.cat(parts)  # embeddings not yet in the cache
        self.history = self.pending      # everything so far (for the re-encode path)
        self.past = None
        self.last_reply_ids: list[int] = []
        self.generator = torch.Generator(device=self.pending.device).manual_seed(
            item_seed(self.seed, sample.id, "reply"))
        self.turns = 0
        self.eval_batch = 1

    def respond(self, observation: str | None = None, info: dict | None = None) -> str:
        ready, self._ready = self._ready, None  # a prefetched reply answers the opening only
        if ready is not None and observation is None:
            return self._take_prefetched(ready)
        self._leave_lockstep()
        if observation is not None:
            self._add_user(observation)
        t0 = clock_ms()
        prefill = self.history if self.reencode else self.pending
        out = generate(self.lm.model, eos_ids=self.eos, dec=self.dec, inputs_embeds=prefill[None],
                       past_key_values=None if self.reencode else self.past, generator=self.generator,
                       context_ids=self.history_ids)
        self._times["receiver"] += clock_ms() - t0
        self.last_first_token_ms = out.first_token_ms
        ids = out.token_ids[0]
        # Cut by the token cap: the reply ended without an end-of-turn token.
        self.truncated_replies += len(ids) >= self.dec.max_new_tokens and (not ids or ids[-1] not in self.eos)
        # The last sampled token was never fed: it opens the next prefill.
        return self._take_reply(ids, out.past_key_values, unfed=1)

    def choose(self, observation: str | None, options: list[str], info: dict | None = None) -> str:
        """Reply with the option the receiver finds most likely (``action=rank``, a diagnostic).

        Each option is a whole reply in the benchmark's format (``Benchmark.action_reply``),
        scored with the end-of-turn token: the sum of its tokens' log-probabilities after the shared prefix, on top of
        the KV cache, all options in one packed forward (``generation.score_continuations``).
        The chosen reply then enters the history as a generated one would.
        """
        self._ready = None
        self._leave_lockstep()
        if observation is not None:
            self._add_user(observation)
        if not options:
            return self.respond(None, info)
        t0 = clock_ms()
        end = self.turn_end
        replies = [conv.tokenize(self.tok, o) + ([end] if end is not None else []) for o in options]
        shared = 0
        while all(len(r) > shared + 1 and r[shared] == replies[0][shared] for r in replies):
            shared += 1
        # Everything new and the shared start of the replies; the log-probs at its last
        # position score each option's first own token.
        prefix = torch.cat([self.pending, self._ids(replies[0][:shared])]) if shared else self.pending
        cache, logp = extend_logits(self.lm.model, prefix, self.past)
        scores = score_continuations(self.lm.model, cache, [r[shared:] for r in replies], logp[-1])
        best = max(range(len(options)), key=lambda i: scores[i])
        ids = replies[best]
        self._times["receiver"] += clock_ms() - t0
        self.last_first_token_ms = 0.0
        # The cache holds the shared start; the option's own tokens open the next prefill.
        return self._take_reply(ids, cache, unfed=len(ids) - shared)

    def _take_prefetched(self, ready: _Prefetched) -> str:
        ids = ready.reply_ids
        self._times["receiver"] += ready.ms
        self.last_first_token_ms = ready.first_token_ms
        self.truncated_replies += len(ids) >= self.dec.max_new_tokens and (not ids or ids[-1] not in self.eos)
        self.eval_batch = ready.batch
        reply = self._take_reply(ids, None, unfed=len(ids))
        # The batch's cache is not this episode's: a further turn re-encodes the history.
        self.pending = self.history
        return reply

    def _take_reply(self, ids: list[int], cache, unfed: int) -> str:
        """Make ``ids`` the agent's reply: ``cache`` holds all but its last ``unfed`` tokens,
        which are queued for the next prefill."""
        self.past = cache
        self.pending = self._ids(ids[len(ids) - unfed:])
        self.history = torch.cat([self.history, self._ids(ids)])
        self.history_ids += ids
        self.last_reply_ids = ids
        self.replies += 1
        reply = self.tok.decode([t for t in ids if t not in self.eos], skip_special_tokens=True)
        self.messages.append({"role": "assistant", "content": reply})
        self.turns += 1
        return reply

    def timings_ms(self) -> dict[str, float]:
        return dict(self._times)

    def transcript(self, message: Message) -> list[dict[str, str]]:
        """The episode as the receiver saw it: the sender's plan (what the message was made
        from), then every turn, the slot shown as what filled it; each turn cut at
        TRANSCRIPT_TURN_CHARS characters and the episode at TRANSCRIPT_TURNS turns."""
        slot = (f"[slot: {message.rows} {message.kind} rows]" if message.rows else "[slot: empty]") \
            if self.special or message.kind is MessageKind.EMBEDDINGS else ""
        turns = [{"role": "plan", "content": message.text}] if message.text else []
        turns += [{"role": m["role"], "content": m["content"].replace(conv.PLACEHOLDER, slot)} for m in self.messages]
        if len(turns) > TRANSCRIPT_TURNS:
            turns = turns[:TRANSCRIPT_TURNS - 1] + [{"role": "note", "content": f"{len(turns) - TRANSCRIPT_TURNS + 1} "
                                                     "more turns not stored"}]
        return [{"role": t["role"], "content": t["content"] if len(t["content"]) <= TRANSCRIPT_TURN_CHARS
                 else t["content"][:TRANSCRIPT_TURN_CHARS] + " [...]"} for t in turns]

    def episode_metrics(self) -> dict[str, int]:
        """Replies this episode and how many the token cap cut (``truncated``: any was cut)."""
        out = {"replies": self.replies, "truncated_replies": self.truncated_replies,
               "truncated": int(self.truncated_replies > 0)}
        if self.eval_batch > 1:
            out["eval_batch"] = self.eval_batch
        return out

    # -- helpers -------------------------------------------------------------------------
    def _ids(self, ids: list[int]) -> torch.Tensor:
        t = torch.tensor(ids, dtype=torch.long, device=self._embed.weight.device)
        with torch.no_grad():
            return self._embed(t)

    def _add_user(self, text: str) -> None:
        """Queue the tokens that close the last reply and add the new user turn."""
        closed = conv.render(self.tok, self.messages, add_generation_prompt=False)
        self.messages.append({"role": "user", "content": text})
        opened = conv.render(self.tok, self.messages, add_generation_prompt=True)
        reply = self.messages[-2]["content"]
        end = closed.rfind(reply) + len(reply) if reply else len(closed) - len(closed.lstrip())
        tail = closed[end:] + opened[len(closed):]
        if self.last_reply_ids and self.last_reply_ids[-1] in self.eos:
            eos_text = self.tok.decode(self.last_reply_ids[-1:])
            if tail.startswith(eos_text):  # already generated (and queued in `pending`)
                tail = tail[len(eos_text):]
        tail_ids = conv.tokenize(self.tok, tail)
        self.history_ids += tail_ids
        new = self._ids(tail_ids)
        self.pending = torch.cat([self.pending, new])
        self.history = torch.cat([self.history, new])
