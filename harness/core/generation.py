"""A small KV-cached decoding loop shared by senders, collectors and receivers.

We own the loop (instead of ``model.generate``) for two reasons: it can return the
last-layer hidden state (after the final norm) that predicted each generated token
without asking for every layer at every step, and it can start from input embeddings
(a latent message in the slot) and continue from an existing KV cache (multi-turn).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interlat_bench.harness.core.kv_cache import AppendLayer, appendable
from interlat_bench.harness.core.runspec import DecodingSpec
from interlat_bench.harness.core.timing import clock_ms

# Decoding settings live with the RunSpec (no torch there); one definition for both.
Decoding = DecodingSpec

# Prompt lookup matches the context's last 1..LOOKUP_NGRAM tokens to find a draft.
LOOKUP_NGRAM = 3


@dataclass
class Generated:
    token_ids: list[list[int]]          # per row, generated tokens up to and including EOS
    hidden: list[torch.Tensor] | None   # per row, (len, H) states that predicted those tokens
    past_key_values: object = None      # cache after the last fed token (for continuation)
    first_token_ms: float = 0.0         # prefill + first token: what a KV cache saves on a turn
    attention_mask: torch.Tensor | None = None  # (rows, cache length): 0 where a row has no token


def _warp(logits: torch.Tensor, dec: Decoding) -> torch.Tensor:
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    for warper in (TemperatureLogitsWarper(dec.temperature), TopKLogitsWarper(dec.top_k),
                   TopPLogitsWarper(dec.top_p)):
        logits = warper(None, logits)
    return logits


# One generator for the whole batch, or one per row (then a row's samples do not depend on
# which other rows share its batch).
Generators = torch.Generator | Sequence[torch.Generator] | None


def next_tokens(logits: torch.Tensor, dec: Decoding, generator: Generators,
                finished: torch.Tensor | None = None) -> torch.Tensor:
    """The next token of each row. With one generator per row, a ``finished`` row (whose
    token is discarded) draws nothing, so its generator is where its reply left it."""
    if dec.greedy:
        return logits.argmax(-1)
    probs = torch.softmax(_warp(logits.float(), dec), dim=-1)
    if isinstance(generator, Sequence):
        if len(generator) != probs.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {probs.shape[0]} rows")
        return torch.cat([probs[i:i + 1].argmax(-1, keepdim=True) if finished is not None and finished[i]
                          else torch.multinomial(probs[i:i + 1], 1, generator=g)
                          for i, g in enumerate(generator)]).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def cache_arg(decoder, cache) -> dict:
    """The keyword a decoder takes its KV cache by: ``cache`` from transformers 5.24 on
    (where ``past_key_values`` warns and is to go in 5.40), ``past_key_values`` before."""
    return {_cache_kw(type(decoder)): cache}


def output_cache(out):
    """The KV cache a decoder returned (``cache`` from transformers 5.24 on; reading the old
    ``past_key_values`` name there prints a deprecation notice)."""
    return out["cache"] if "cache" in out else out.past_key_values  # noqa: SIM401 (.get reads both)


@functools.cache
def _cache_kw(decoder_cls) -> str:
    return "cache" if "cache" in inspect.signature(decoder_cls.forward).parameters else "past_key_values"


def backbone_and_head(model):
    """The decoder stack (returns normed last-layer states) and the LM head."""
    return model.get_decoder(), model.get_output_embeddings()


@torch.no_grad()
def generate(
    model,
    *,
    eos_ids: set[int],
    dec: Decoding,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    past_key_values=None,
    capture_hidden: bool = False,
    generator: Generators = None,
    context_ids: list[int] | None = None,
    drop_finished: bool = True,
) -> Generated:
    """Decode a left-padded batch.

    The prefill is ``input_ids`` or ``inputs_embeds`` (B x T, left padded, with
    ``attention_mask``), optionally after ``past_key_values`` (whose mask must be the prefix
    of ``attention_mask``). Rows stop at an EOS id or after ``dec.max_new_tokens``.
    ``generator`` may be a list with one generator per row (sampling only). Once half the
    rows of a batch have finished they leave it (the returned cache holds the rows left),
    unless ``drop_finished`` is False: then every row stays, finished ones feeding masked
    padding, so that the cache can carry all rows into a next turn.
    ``context_ids``: the token ids of a single row's whole context (cached prefix and
    prefill, -1 where a row has no token); with greedy decoding and ``dec.lookup_tokens``
    it turns on prompt lookup (see ``_generate_with_lookup``).
    """
    t0 = clock_ms()
    first_token_ms = 0.0
    decoder, head = backbone_and_head(model)
    embed = model.get_input_embeddings()
    # Inputs may come from the host (token ids, a message): decode where the model lives.
    dev = embed.weight.device
    x = inputs_embeds.to(dev) if inputs_embeds is not None else embed(input_ids.to(dev))
    batch, prompt_len = x.shape[:2]
    past_key_values = appendable(past_key_values, model.config)
    if attention_mask is None:  # unpadded: cover the cached prefix and the new input
        cached = past_key_values.get_seq_length()
        attention_mask = torch.ones(batch, cached + prompt_len, dtype=torch.long, device=dev)
    mask = attention_mask.to(dev)
    if batch == 1 and dec.greedy and dec.lookup_tokens > 0 and context_ids is not None \
            and all(isinstance(layer, AppendLayer) for layer in past_key_values.layers):
        return _generate_with_lookup(model, x, mask, past_key_values, eos_ids, dec, capture_hidden,
                                     list(context_ids), t0)
    done = torch.zeros(batch, dtype=torch.bool, device=dev)
    out_ids: list[list[int]] = [[] for _ in range(batch)]
    out_h: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    rows = list(range(batch))  # the output row of each row still in the batch
    gens = list(generator) if isinstance(generator, Sequence) else generator
    step_input = x
    for step in range(dec.max_new_tokens):
        h = _forward(decoder, step_input, mask, past_key_values)[:, -1]
        logits = head(h)
        tok = next_tokens(logits, dec, gens, done)
        if step == 0:
            first_token_ms = clock_ms() - t0
        for i, row in enumerate(rows):
            if not done[i]:
                out_ids[row].append(int(tok[i]))
                if capture_hidden:
                    out_h[row].append(h[i])
                if int(tok[i]) in eos_ids:
                    done[i] = True
        if bool(done.all()):
            break
        if drop_finished and 2 * int(done.sum()) >= len(rows):
            # Half the rows are finished: drop them, so the steps left cost the rows that
            # still decode (the returned cache then holds those rows only).
            keep = (~done).nonzero().squeeze(-1)
            past_key_values.batch_select_indices(keep)
            rows = [rows[i] for i in keep.tolist()]
            gens = [gens[i] for i in keep.tolist()] if isinstance(gens, list) else gens
            mask, tok, done = mask[keep], tok[keep], done[keep]
        # Finished rows keep decoding padding we discard; masking them out keeps positions sane.
        mask = torch.cat([mask, (~done).long().unsqueeze(-1)], dim=-1)
        step_input = embed(tok.unsqueeze(-1))
    hidden = [torch.stack(rows) if rows else torch.empty(0, x.shape[-1]) for rows in out_h] \
        if capture_hidden else None
    return Generated(token_ids=out_ids, hidden=hidden, past_key_values=past_key_values,
                     first_token_ms=first_token_ms, attention_mask=_cache_mask(mask, past_key_values))


def _cache_mask(mask: torch.Tensor, cache) -> torch.Tensor:
    """The part of a decoding loop's mask that covers ``cache`` (the loop may have added a
    column for a token it sampled but never fed)."""
    return mask[:, :cache.get_seq_length()]


@torch.no_grad()
def extend_logits(model, embeds: torch.Tensor, cache):
    """Feed one unpadded row of embeddings (T x H) on top of ``cache`` (extended in place);
    returns the cache and the next-token log-probabilities at each new position (T x V)."""
    decoder, head = backbone_and_head(model)
    cache = appendable(cache, model.config)
    dev = embeds.device
    mask = torch.ones(1, cache.get_seq_length() + embeds.shape[0], dtype=torch.long, device=dev)
    h = _forward(decoder, embeds[None], mask, cache)[0]
    return cache, torch.log_softmax(head(h).float(), dim=-1)


@torch.no_grad()
def score_continuations(model, cache, options: list[list[int]], first_logp: torch.Tensor) -> list[float]:
    """Summed log-probability of each token sequence in ``options`` as a continuation of the
    (unpadded, one-row) ``cache``; ``first_logp``: the next-token log-probs after the cache.

    All options run in one forward: their tokens are packed after the cache, each attending
    to the cache and to its own earlier tokens only (a 4D mask), with positions restarting
    at the cache length for each; the cache is cropped back afterwards. The same numbers as
    scoring each option alone, at the cost of one prefill of their total length.
    """
    decoder, head = backbone_and_head(model)
    embed = model.get_input_embeddings()
    dev = embed.weight.device
    past = cache.get_seq_length()
    feeds = [o[:-1] for o in options]  # an option's last token is scored, never fed
    total = sum(len(f) for f in feeds)
    scores = [float(first_logp[o[0]]) for o in options]
    if total == 0:
        return scores
    ids = torch.tensor([t for f in feeds for t in f], device=dev)
    positions = torch.tensor([past + k for f in feeds for k in range(len(f))], device=dev)[None]
    allowed = torch.zeros(total, past + total, dtype=torch.bool, device=dev)
    allowed[:, :past] = True
    start = 0
    for f in feeds:
        n = len(f)
        allowed[start:start + n, past + start:past + start + n] = torch.ones(n, n, dtype=torch.bool,
                                                                           device=dev).tril()
        start += n
    dtype = embed.weight.dtype
    mask = torch.zeros(1, 1, total, past + total, dtype=dtype, device=dev).masked_fill(
        ~allowed, torch.finfo(dtype).min)
    h = decoder(inputs_embeds=embed(ids)[None], attention_mask=mask, position_ids=positions,
                **cache_arg(decoder, cache), use_cache=True).last_hidden_state[0]
    cache.crop(-total)
    logp = torch.log_softmax(head(h).float(), dim=-1)
    start = 0
    for i, (o, f) in enumerate(zip(options, feeds)):
        if f:
            targets = torch.tensor(o[1:], device=dev)
            scores[i] += float(logp[start:start + len(f)].gather(1, targets[:, None]).sum())
        start += len(f)
    return scores


def _forward(decoder, step_input, mask, cache) -> torch.Tensor:
    """One decoder pass over step_input on top of the cache (which it extends); last-layer states."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_input.shape[1]:]
    return decoder(inputs_embeds=step_input, attention_mask=mask, position_ids=positions,
                   **cache_arg(decoder, cache), use_cache=True).last_hidden_state


def draft_from_context(seq: list[int], k: int, max_ngram: int = LOOKUP_NGRAM) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of seq's last n-gram.

    Tries n = max_ngram down to 1. Negative ids (rows with no token, such as a latent
    message) never match and end a draft.
    """
    if k <= 0:
        return []
    for n in range(min(max_ngram, len(seq) - 1), 0, -1):
        tail = seq[-n:]
        for i in range(len(seq) - n - 1, -1, -1):
            if seq[i:i + n] == tail:
                draft = seq[i + n:i + n + k]
                cut = next((j for j, t in enumerate(draft) if t < 0), len(draft))
                if cut:
                    return draft[:cut]
    return []


def _generate_with_lookup(model, x, mask, cache, eos_ids, dec, capture_hidden, seq, t0) -> Generated:
    """Greedy decoding of one row with prompt lookup.

    Each step feeds the last token plus a draft copied from the context (the tokens that
    followed the latest match of the current n-gram) and reads the model's greedy choice at
    every fed position: the draft is kept up to its first miss, then the model's own token
    follows. The result is the tokens of one-at-a-time greedy decoding (up to float
    rounding of the wider step) in fewer steps whenever the reply copies its context, as
    ALFWorld actions copy object and receptacle names. A step is bound by reading the
    weights, so checking a draft costs far less than feeding it token by token (on a
    2-core CPU a 5-token step of SmolLM2 takes about 1.5x a 1-token step).
    """
    decoder, head = backbone_and_head(model)
    embed = model.get_input_embeddings()
    ids: list[int] = []
    states: list[torch.Tensor] = []
    first_token_ms = 0.0
    # The reply's opening can be drafted too (from what followed earlier turns' openings).
    draft = draft_from_context(seq, min(dec.lookup_tokens, dec.max_new_tokens - 1))
    if draft:
        x = torch.cat([x, embed(torch.tensor([draft], device=x.device))], dim=1)
        mask = torch.cat([mask, mask.new_ones(1, len(draft))], dim=-1)
    step_input = x
    while True:
        # The states that pick the next tokens: after the last fed token and each draft token.
        h = _forward(decoder, step_input, mask, cache)[0, -(len(draft) + 1):]
        greedy = head(h).argmax(-1).tolist()
        if not ids:
            first_token_ms = clock_ms() - t0
        kept = next((j for j, (d, g) in enumerate(zip(draft, greedy)) if d != g), len(draft))
        new = greedy[:kept + 1]
        stop = next((j + 1 for j, t in enumerate(new) if t in eos_ids), None)
        new = new[:min(stop or len(new), dec.max_new_tokens - len(ids))]
        ids += new
        if capture_hidden:
            states += list(h[:len(new)])
        # The cache must end just before the last new token (which is fed next): drop the rest.
        surplus = len(draft) + 1 - len(new)
        if surplus:
            cache.crop(-surplus)
            mask = mask[:, :-surplus]
        if ids[-1] in eos_ids or len(ids) >= dec.max_new_tokens:
            break
        seq += new
        draft = draft_from_context(seq, min(dec.lookup_tokens, dec.max_new_tokens - len(ids) - 1))
        step = [ids[-1], *draft]
        mask = torch.cat([mask, mask.new_ones(1, len(step))], dim=-1)
        step_input = embed(torch.tensor([step], device=x.device))
    hidden = [torch.stack(states) if states else torch.empty(0, x.shape[-1])] if capture_hidden else None
    return Generated(token_ids=[ids], hidden=hidden, past_key_values=cache, first_token_ms=first_token_ms,
                     attention_mask=_cache_mask(mask, cache))


def eos_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
            ids.add(tid)
    return {i for i in ids if i is not None}


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)
