"""MATH answers: take the last ``\\boxed{...}`` and grade by mathematical equivalence.

Equivalence comes from math-verify (``\\frac12`` equals ``0.5``), not string equality.
math-verify guards its sympy work with SIGALRM timeouts, which only work on the main
thread; off the main thread we disable them instead of crashing.
"""

from __future__ import annotations

import threading

_BOXED = ("\\boxed", "\\fbox")


def last_boxed(text: str | None) -> str | None:
    """Content of the last ``\\boxed{...}`` (nested braces allowed) or ``\\boxed x``; None if absent."""
    if not text:
        return None
    start = max(text.rfind(tag) for tag in _BOXED)
    if start < 0:
        return None
    i = text.index("\\", start) + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if i < len(text) and text[i] == " ":  # "\boxed 2" (no braces): up to the next space or $
        rest = text[i + 1:]
        end = min([p for p in (rest.find("$"), rest.find(" "), rest.find("\n")) if p >= 0] or [len(rest)])
        return rest[:end].strip() or None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j].strip()
    return None  # unbalanced: the answer was cut off


def _timeouts() -> dict:
    on_main = threading.current_thread() is threading.main_thread()
    return {"parsing_timeout": 5 if on_main else None}, {"timeout_seconds": 5 if on_main else None}


def is_equivalent(gold: str | None, predicted: str | None) -> bool:
    """True when the predicted answer is mathematically equal to the gold answer."""
    if gold is None or predicted is None or not predicted.strip():
        return False
    from math_verify import parse, verify

    parse_kw, verify_kw = _timeouts()
    gold_parsed = parse(f"\\boxed{{{gold}}}", **parse_kw)
    pred_parsed = parse(f"\\boxed{{{predicted}}}", **parse_kw)
    if not gold_parsed or not pred_parsed:
        # Unparseable (e.g. text answers): fall back to whitespace-insensitive string match.
        return "".join(gold.split()) == "".join(predicted.split())
    return bool(verify(gold_parsed, pred_parsed, **verify_kw))
