"""lm-eval model ``interlat``: any lm-eval task as a latent-communication benchmark.

For each request the request's context is the task: the sender plans for it (the method's
sender settings, the planner prompt of ``task`` or the generic one), and the trained receiver
answers the context as its user turn with the message in its slot, exactly as a harness cell
plays a sample (the driver's ``Cell`` builds the stages, ``harness.playing.Player`` plays)::

    interlat-bench lm-eval --model interlat \\
        --model_args method=latent,checkpoint=<folder>,task=math --tasks <task> --include_path <dir>

(``python -m interlat_bench.harness.lm_eval_model`` takes the same arguments.)

lm-eval 0.4.13 finds models only in its registry, filled by imports (no entry-point group),
so its own ``lm_eval`` command cannot see ``interlat``: ``main`` imports this module (which
registers the model) and hands the arguments to lm-eval's CLI.

Model args: ``method`` (latent | text | no_comm, or any method with a trained receiver),
``receiver``/``sender`` (model references), ``checkpoint`` (a receiver folder from
``interlat-bench train``) or ``task`` (a harness benchmark: its receiver is trained or reused
from the cache as ``interlat-bench train`` would; with ``checkpoint`` it only sets the planner
prompt and sender defaults), ``max_new_tokens`` (caps every reply), ``dtype``, ``seed``, and
the method's own settings (``plan_tokens``, ``n_train``, ...), and ``model`` (the name lm-eval
files results under; ``main`` sets it from method, models and checkpoint or task, so two
configurations never share an output folder). ``batch_size`` (lm-eval's ``--batch_size``) is how
many ``generate_until`` replies the receiver decodes together: a number, or ``auto``/``auto:N``
for ``AUTO_BATCH`` (no memory probe), either capped by ``--max_batch_size``; log-likelihoods run
one context at a time on the receiver's KV-cached agent. ``--device`` is taken as lm-eval's
``hf`` model takes it (a device this machine lacks falls back to cuda when present, else cpu).
``--apply_chat_template`` is refused: the receiver always reads the context as the user turn
of its own chat template, with the message in its slot.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import lm_eval.models  # noqa: F401  lm-eval imports its built-ins only into an empty registry
from lm_eval.api.model import LM
from lm_eval.api.registry import model_registry
from tqdm import tqdm

from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.models import SMOLLM2

MODEL_NAME = "interlat"
# generate_until replies decoded together under --batch_size auto (lm-eval's hf model probes
# memory for the largest; here replies are short and a fixed batch was fastest on CPU and GPU).
AUTO_BATCH = 16
# Our own model_args besides the method's settings.
OWN_ARGS = ("method", "receiver", "sender", "checkpoint", "task", "max_new_tokens", "dtype", "seed", "model")
# Under lm-eval's logger: its CLI configures that one alone, so our progress (sender plans,
# "reusing trained receiver") shows next to its own.
log = logging.getLogger("lm_eval.interlat")


def sample_for(context: str):
    """The harness sample of a request: the context is the task; its id is content-addressed,
    so the same context gets the same (seeded) plan and message cache entry in every run."""
    from interlat_bench.benchmarks.base import Sample

    return Sample(f"lm_eval/{hashlib.sha256(context.encode()).hexdigest()[:16]}", context)


class InterlatLM(LM):
    def __init__(self, method: str = "latent", receiver: str = SMOLLM2, sender: str = SMOLLM2,
                 checkpoint: str | None = None, task: str | None = None, max_new_tokens: int | None = None,
                 dtype: str = "auto", seed: int = 0, batch_size=1, max_batch_size=None, device=None,
                 model: str | None = None, **params):
        super().__init__()
        from interlat_bench.benchmarks.base import Benchmark
        from interlat_bench.harness.core.models import on_gpu, resolve_dtype, use_device
        from interlat_bench.harness.core.params import check_params
        from interlat_bench.harness.core.registry import benchmarks, methods
        from interlat_bench.harness.core.runspec import RunSpec
        from interlat_bench.harness.grid import expand, with_stages
        from interlat_bench.harness.playing import Player
        from interlat_bench.harness.runner import Cell

        mcls = methods.get(method)
        if mcls.trained_with is None:
            raise UserError(f"interlat: method {method!r} has no trained receiver "
                            "(use latent, text or no_comm)")
        unknown = sorted(set(params) - set(mcls.defaults))
        if unknown:
            raise UserError(f"interlat: unknown model_args {unknown}; method {method!r} takes "
                            f"{sorted(mcls.defaults)} besides {', '.join(OWN_ARGS)}")
        self.batch_size = _batch_size(batch_size, max_batch_size)
        self.device_name = use_device(device)
        if dtype == "auto":  # as the CLI resolves it, so `task` finds the checkpoint `train` wrote
            dtype = "bfloat16" if on_gpu() else "float32"
        resolve_dtype(dtype)
        if task:  # the spec `interlat-bench train -m <method> -t <task> -p ...` makes
            spec = expand(methods_csv=method, tasks_csv=task, seeds=[int(seed)], sender_model=sender,
                          receiver_model=receiver, dtype=dtype, method_params=params)[0]
            bench = benchmarks.get(task)(dict(spec.benchmark_params))
        else:
            check_params("model_args", params, mcls.param_checks, f"method {method}")
            spec = RunSpec.make(method=method, benchmark="lm_eval", split="lm_eval", receiver_model=receiver,
                                sender_model=sender if mcls.needs_sender() else None, seed=int(seed), dtype=dtype,
                                method_params={**mcls.defaults, **params})
            bench = Benchmark()  # the generic planner prompt
            spec = with_stages(spec, bench)
        if checkpoint:
            folder = Path(checkpoint)
            if not (folder / "DONE").exists():
                raise UserError(f"interlat: checkpoint={folder} is not a finished receiver checkpoint "
                                "(a folder printed by `interlat-bench train`)")
        elif not task:
            raise UserError("interlat: give checkpoint=<receiver folder> (from `interlat-bench train`) "
                            "or task=<benchmark> (train or reuse its receiver)")
        # The driver's stages, as a harness cell builds them (a given checkpoint stands for training).
        self.cell = Cell(spec, bench, log=log.info, checkpoint=Path(checkpoint) if checkpoint else None)
        folder, self.method, self.receiver = self.cell.checkpoint(), self.cell.method, self.cell.receiver()
        if self.method.sends is MessageKind.LATENT and self.receiver.adapter is None:
            raise UserError(f"interlat: {folder} has no adapter: a {self.receiver.kind} receiver "
                            "cannot read latents")
        if self.receiver.kind is not self.method.trained_with:  # an ablation: a latent receiver, empty slot
            log.warning("interlat: receiver trained with %s, evaluated with method %s",
                        self.receiver.kind, method)
        self.agent = self.cell.agent()
        self.max_new_tokens = int(max_new_tokens) if max_new_tokens else None
        self.info = {"method": method, "sender": spec.sender_model, "receiver": receiver, "checkpoint": str(folder),
                     "task": task, "method_params": dict(spec.method_params), "device": self.device_name,
                     "dtype": dtype, "batch_size": self.batch_size}
        self._messages: dict = {}
        self._planned: set[str] = set()
        self.player = Player(spec, bench, self.method, self.agent, self._messages)

    @property
    def device(self) -> str:
        return self.device_name

    def chat_template(self, chat_template=False):
        if chat_template:
            _refuse_chat_template()
        return None

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        _refuse_chat_template()

    # -- the sender ----------------------------------------------------------------------
    def plan(self, contexts: list[str]) -> None:
        """The sender's messages for every new context, in one batched (cached) collection."""
        new = [s for s in map(sample_for, dict.fromkeys(contexts)) if s.id not in self._planned]
        if new:
            self._messages.update(self.cell.messages(new))
            self._planned.update(s.id for s in new)

    def message(self, context: str):
        """What the receiver reads for ``context``, as a harness cell gives it to a sample."""
        self.plan([context])
        return self.player.message(sample_for(context))

    def _begin(self, context: str) -> None:
        self.agent.begin(context, self.message(context), sample_for(context))

    # -- lm-eval requests ----------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """log P(continuation | context in the user turn, message in the slot), the continuation
        scored as the opening of the assistant reply (its leading whitespace dropped: trained
        replies start right after the turn header). One prefill per distinct context."""
        from interlat_bench.harness.core.generation import extend_logits

        args = [r.args for r in requests]
        self.plan([c for c, _ in args])
        by_context: dict[str, list[int]] = defaultdict(list)
        for i, (context, _) in enumerate(args):
            by_context[context].append(i)
        out: list[tuple[float, bool]] = [(0.0, True)] * len(args)
        for context, rows in tqdm(by_context.items(), disable=disable_tqdm, desc="interlat loglikelihood"):
            self._begin(context)
            # The agent's queued prompt: turn, <bop> slot <eop>, generation prompt (ReceiverAgent.begin).
            cache, logp = extend_logits(self.receiver.lm.model, self.agent.pending, None)
            for i in rows:
                out[i] = self._score(cache, logp[-1], args[i][1])
                self.cache_hook.add_partial("loglikelihood", args[i], out[i])
        return out

    def _score(self, cache, first_logp, continuation: str) -> tuple[float, bool]:
        """Summed log-prob and greedy-ness of ``continuation`` on top of ``cache`` (left as it was).
        One pass per continuation rather than ``score_continuations``' packed one: is_greedy
        needs the argmax at every position, not just the sum."""
        import torch

        from interlat_bench.harness.core import conversation as conv
        from interlat_bench.harness.core.generation import extend_logits

        lm = self.receiver.lm
        ids = conv.tokenize(lm.tokenizer, continuation.lstrip())
        if not ids:
            return 0.0, True
        logp = first_logp[None]
        if len(ids) > 1:
            embed = lm.model.get_input_embeddings()
            with torch.no_grad():
                fed = embed(torch.tensor(ids[:-1], device=embed.weight.device))
            _, more = extend_logits(lm.model, fed, cache)
            cache.crop(-len(fed))
            logp = torch.cat([logp, more])
        target = torch.tensor(ids, device=logp.device)
        return float(logp.gather(1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise UserError(
            "interlat: loglikelihood_rolling (perplexity tasks) is not supported: the receiver answers a "
            "task the sender planned for, and a rolling window over a document has no such task")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy reply to the context (sampling settings in gen_kwargs are ignored), to the end of
        the turn or ``max_gen_toks`` (``max_new_tokens`` when set), cut at the first ``until`` string."""
        self.plan([r.args[0] for r in requests])
        out = []
        for at, r in enumerate(tqdm(requests, disable=disable_tqdm, desc="interlat generate_until")):
            context, kwargs = r.args
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            n = self._reply_tokens(kwargs)
            self.agent.dec = replace(self.agent.dec, greedy=True, max_new_tokens=n)  # read per reply
            if at % self.batch_size == 0:
                self._prefetch([q.args[0] for q in requests[at:at + self.batch_size]
                                if self._reply_tokens(q.args[1]) == n])
            self._begin(context)
            reply = self.agent.respond()
            reply = reply[:min((reply.find(s) for s in until if s and s in reply), default=len(reply))]
            out.append(reply)
            self.cache_hook.add_partial("generate_until", r.args, reply)
        return out

    def _reply_tokens(self, kwargs) -> int:
        return self.max_new_tokens or int(dict(kwargs or {}).get("max_gen_toks", 256))

    def _prefetch(self, contexts: list[str]) -> None:
        """Replies to the next contexts (those with this reply's token cap) in one batch."""
        contexts = list(dict.fromkeys(contexts))
        if len(contexts) > 1 and self.player.can.prefetch:
            self.agent.prefetch([(c, self.message(c), sample_for(c)) for c in contexts])

    def get_model_info(self) -> dict:
        return {"interlat": self.info}


def _refuse_chat_template():
    raise UserError("interlat: --apply_chat_template is not supported: the receiver always reads the context "
                    "as the user turn of its own chat template, with the message in its slot; run without it")


def _batch_size(batch_size, max_batch_size) -> int:
    """lm-eval's --batch_size (a number, auto or auto:N) within --max_batch_size."""
    text = str(batch_size if batch_size is not None else 1).strip()
    if text == "auto" or text.startswith("auto:"):
        size = AUTO_BATCH
    elif text.isdigit() and int(text) > 0:
        size = int(text)
    else:
        raise UserError(f"interlat: --batch_size {text!r}: expected a positive number, auto or auto:N")
    if max_batch_size not in (None, ""):
        if not str(max_batch_size).isdigit() or int(max_batch_size) < 1:
            raise UserError(f"interlat: --max_batch_size {max_batch_size!r}: expected a positive number")
        size = min(size, int(max_batch_size))
    return size


# A lazy placeholder rather than the class: registering the same string twice is allowed, so this
# module may run as `python -m` (as __main__) and be imported by the registry as well.
model_registry.register(MODEL_NAME, target="interlat_bench.harness.lm_eval_model:InterlatLM")


HELP_PREFACE = """\
interlat-bench lm-eval: lm-eval's own command line, with the model `interlat` registered:
  interlat-bench lm-eval --model interlat --model_args method=latent,task=math --tasks <tasks>
model_args: method, receiver, sender, checkpoint or task, max_new_tokens, dtype, seed, model, and
the method's settings (plan_tokens, n_train, ...). lm-eval's help follows.
"""


def _option(argv: list[str], name: str) -> tuple[int, str] | None:
    """(index, value) of ``--name value`` or ``--name=value`` in ``argv``."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return i, argv[i + 1]
        if arg.startswith(name + "="):
            return i, arg[len(name) + 1:]
    return None


def run_name(model_args: str) -> str:
    """A name that tells configurations apart, for lm-eval's output folder: without one (no
    ``pretrained=`` or ``model=``) lm-eval files every interlat run under the same seeded random
    name, so a latent and a no_comm run land together."""
    args = dict(part.split("=", 1) for part in model_args.split(",") if "=" in part)
    origin = (f"task-{args['task']}" if args.get("task") else "") + \
        (f"ckpt-{Path(args['checkpoint']).name}" if args.get("checkpoint") else "")
    parts = [MODEL_NAME, args.get("method", "latent"), f"{args.get('sender', SMOLLM2)}-to-{args.get('receiver', SMOLLM2)}",
             origin, f"seed{args['seed']}" if args.get("seed") else ""]
    return "_".join(p for p in parts if p)


def with_defaults(argv: list[str]) -> list[str]:
    """The command line lm-eval gets: for ``--model interlat``, ``model=<run_name>`` in the model
    args (unless given) and ``--device`` resolved as the model will resolve it (lm-eval otherwise
    records its default, cuda:0, on a machine without a GPU)."""
    model = _option(argv, "--model")
    if model is None or model[1] != MODEL_NAME:
        return argv
    argv = list(argv)
    found = _option(argv, "--model_args")
    if found is not None and not found[1].lstrip().startswith("{"):
        i, value = found
        parsed = [part.split("=", 1)[0].strip() for part in value.split(",") if part.strip()]
        if "model" not in parsed and "pretrained" not in parsed:
            named = f"{value},model={run_name(value)}" if value.strip() else f"model={run_name(value)}"
            argv[i:i + (2 if argv[i] == "--model_args" else 1)] = ["--model_args", named]
    elif found is None:
        argv += ["--model_args", f"model={run_name('')}"]
    device = _option(argv, "--device")
    from interlat_bench.harness.core.models import use_device

    resolved = use_device(device[1] if device else None)
    if device is None:
        argv += ["--device", resolved]
    return argv


def main(argv: list[str] | None = None) -> int:
    """lm-eval's command line with ``interlat`` registered, e.g.
    ``main(["--model", "interlat", "--model_args", "checkpoint=...", "--tasks", "..."])``.
    A UserError (a bad model arg, --apply_chat_template) is one line on stderr and exit 2."""
    from lm_eval.__main__ import cli_evaluate

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP_PREFACE)
    saved = sys.argv
    sys.argv = ["lm-eval", *with_defaults(argv)]  # lm-eval's parser reads sys.argv itself
    try:
        cli_evaluate()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code or 2
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
