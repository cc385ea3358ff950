"""Run grid cells, each in one direction: samples -> receiver training (on the sender's
training messages) -> the sender's evaluation messages -> evaluation -> records.

``run_cell`` owns the stages and calls each once, in order; a method only declares what
goes into them (``methods.base.Method``). Finished samples are skipped (resume), records are
appended to shards as they come and ingested into DuckDB once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from interlat_bench.harness.core import progress
from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.registry import benchmarks, methods
from interlat_bench.harness.core.runspec import RunSpec
from interlat_bench.harness.core.seeds import item_seed
from interlat_bench.harness.core.timing import clock_ms
from interlat_bench.methods.base import RunContext
from interlat_bench.results.shards import ShardWriter, ingest, resume_ids
from interlat_bench.results.store import Store, add_tags


@dataclass
class CellResult:
    spec: RunSpec
    total: int
    computed: int
    errors: int


def _git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("interlat-bench", "torch", "transformers", "duckdb", "math-verify", "alfworld"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _run_row(spec: RunSpec, status: str, device: str | None, tags: tuple[str, ...] = ()) -> dict:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return {"run_key": spec.run_key, "method": spec.method, "benchmark": spec.benchmark,
            "split": spec.split, "sender": spec.sender, "receiver": spec.receiver, "seed": spec.seed,
            "spec": spec.to_json(), "status": status, "created_at": now, "updated_at": now,
            "git_sha": _git_sha(), "versions": _versions(), "device": device, "tags": list(tags) or None}


# Replies decoded together on single-reply benchmarks (MATH, probe). Not part of the run key:
# each row's reply is the one it gets alone, up to the float rounding of a padded batch.
EVAL_BATCH = 16
# Episodes of a multi-turn benchmark played in lockstep where it allows (ALFWorld), each
# turn's replies decoded in one batch (same proviso). On a GPU a decode step costs about the
# same for 1 row as for 16; on a CPU a batch of 12 trained-receiver games ran 1.17x one game
# at a time with prompt lookup, 4 games 0.98x (bench/alfworld_episodes.py), so one at a time.
EPISODE_BATCH = {"cuda": 16, "cpu": 1}


def episode_batch_default() -> int:
    from interlat_bench.harness.core.models import device

    return EPISODE_BATCH.get(device().split(":")[0], 1)

# Per worker process: (benchmark, method, agent, messages) of the run being played.
_WORKER: dict[str, tuple] = {}


def _set_up_worker(spec: RunSpec, receiver=None, messages: dict | None = None) -> None:
    bench = benchmarks.get(spec.benchmark)(dict(spec.benchmark_params))
    method = methods.get(spec.method)(dict(spec.method_params))
    agent = method.agent(RunContext(spec=spec, benchmark=bench), receiver)
    _WORKER.clear()
    _WORKER[spec.run_key] = (bench, method, agent, messages or {})


def _start_episode_worker(spec: RunSpec, folder: str | None, messages: dict, threads: int) -> None:
    """Initializer of a process that plays LLM episodes (``--episode-workers``): its own copy
    of the receiver (loaded from the trained checkpoint ``folder``) on ``threads`` threads."""
    import torch

    from interlat_bench.trainers.receiver import load_receiver

    _die_with_parent()
    torch.set_num_threads(threads)
    _set_up_worker(spec, load_receiver(folder, dtype=spec.dtype) if folder is not None else None, messages)


def _play_in_worker(args):
    """Play one sample in a worker process: (spec, sample). A reference policy's worker
    (``parallel_episodes``: no model, no messages) sets itself up on its first sample."""
    spec, sample = args
    if spec.run_key not in _WORKER:
        _set_up_worker(spec)
    bench, method, agent, messages = _WORKER[spec.run_key]
    return _play(spec, bench, method, agent, messages, sample)


def _die_with_parent() -> None:
    """Worker initializer: end this worker when the run's process dies, even by SIGKILL
    (Linux prctl PR_SET_PDEATHSIG); elsewhere workers finish their current episode."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _message(spec: RunSpec, method, messages, sample):
    """The message ``sample``'s receiver gets, as changed on the way (seeded per sample)."""
    import torch

    rng = torch.Generator().manual_seed(item_seed(spec.seed, sample.id, "transform"))
    return method.transform(method.message_for(sample, messages, spec.seed), rng)


def _play(spec: RunSpec, bench, method, agent, messages, sample, start: float | None = None):
    """One sample -> Record; a failure becomes an error record (retried on the next run).
    ``start``: when the sample began to be waited for (its batch's start), else now."""
    from interlat_bench.benchmarks.base import Record

    start = clock_ms() if start is None else start
    message = None
    try:
        message = _message(spec, method, messages, sample)
        record = bench.play(sample, agent, message)
    except Exception as e:  # one broken sample must not sink the run
        record = Record.from_error(sample.id, e)
    return _finish(record, message, agent, start)


def _finish(record, message, agent, start: float):
    """What every played record carries: the message's accounting, the episode's transcript,
    and the evaluation wall time of the sample as waited for: transform, receiver turns (with
    its batch's, when decoded together), environment or grading (the sender's generation ran
    before, batched, in the collection stage)."""
    from interlat_bench.benchmarks.base import Record

    if record.error is None:
        try:
            record.metrics.update(message.stats())
            if hasattr(agent, "transcript"):  # what `interlat-bench show` prints
                record.metrics["transcript"] = agent.transcript(message)
            # A message read back from the cache cost no sender time now: record none rather
            # than replay the time of the run that generated it.
            if message.kind is not MessageKind.NONE and not message.from_cache:
                record.timings_ms.setdefault("sender", message.sender_ms)
        except Exception as e:
            record = Record.from_error(record.sample_id, e)
    record.timings_ms["wall"] = clock_ms() - start
    return record


def _play_together(spec, bench, method, agent, messages, chunk, log):
    """Play ``chunk``'s multi-turn episodes in lockstep (``bench.play_together``), one
    ``agent.sibling()`` each, every turn's replies decoded in one batch; yield each record
    as its episode ends. A sample whose message fails fails alone; if the batch itself fails
    (e.g. out of memory), the episodes it had not finished are played one at a time."""
    start = clock_ms()
    together = []
    for sample in chunk:
        try:
            together.append((sample, _message(spec, method, messages, sample)))
        except Exception:
            yield _play(spec, bench, method, agent, messages, sample, start)
    agents = [agent.sibling() for _ in together]
    ended: set[int] = set()
    try:
        for i, record in bench.play_together([s for s, _ in together], agents, [m for _, m in together],
                                             type(agent).respond_together):
            ended.add(i)
            yield _finish(record, together[i][1], agents[i], start)
    except Exception as exc:
        left = [sample for i, (sample, _) in enumerate(together) if i not in ended]
        log(f"playing {len(together)} episodes together failed ({type(exc).__name__}: {exc}); "
            f"playing the {len(left)} left one at a time")
        for sample in left:
            yield _play(spec, bench, method, agent, messages, sample)


@dataclass
class EpisodeWorkers:
    """LLM episodes of a multi-turn benchmark played in ``n`` processes, each loading the
    receiver from ``folder`` (None: a method whose receiver is the plain model)."""

    n: int
    folder: str | None


def _records(spec, bench, method, agent, messages, todo, workers: int, eval_batch: int = 1, log=print,
             episode_workers: EpisodeWorkers | None = None, episode_batch: int = 1):
    """Yield records; reference policies play in ``workers`` processes (``agent`` None: each
    worker builds its own), LLM episodes in ``episode_workers``. On a single-reply benchmark
    an agent that can ``prefetch`` decodes ``eval_batch`` replies at a time; on a multi-turn
    benchmark that plays games together, ``episode_batch`` episodes are played in lockstep."""
    if agent is None:
        import multiprocessing
        import os

        # spawn: the parent holds torch/OpenMP threads a fork would break. Workers are recycled
        # because every ALFWorld game leaves a few MB behind in its process (multiprocessing.Pool:
        # ProcessPoolExecutor's max_tasks_per_child can hang on CPython 3.11, gh-115634).
        ctx_mp = multiprocessing.get_context("spawn")
        if episode_workers is not None:  # each process loads a model: never recycled
            n = min(episode_workers.n, len(todo))
            init = (spec, episode_workers.folder, messages, max(1, (os.cpu_count() or 1) // n))
            with ctx_mp.Pool(n, initializer=_start_episode_worker, initargs=init) as pool:
                yield from pool.imap(_play_in_worker, [(spec, s) for s in todo])
            return
        with ctx_mp.Pool(min(workers, len(todo)), initializer=_die_with_parent, maxtasksperchild=25) as pool:
            yield from pool.imap(_play_in_worker, [(spec, s) for s in todo])
        return
    if episode_batch > 1 and len(todo) > 1 and bench.plays_together and hasattr(agent, "respond_together") \
            and agent.can_respond_together():
        for at in range(0, len(todo), episode_batch):
            yield from _play_together(spec, bench, method, agent, messages, todo[at:at + episode_batch], log)
        return
    batched = eval_batch > 1 and hasattr(agent, "prefetch") and bool(todo) \
        and bench.single_reply_prompt(todo[0]) is not None
    for at in range(0, len(todo), eval_batch if batched else 1):
        chunk = todo[at:at + eval_batch] if batched else todo[at:at + 1]
        start = clock_ms()
        if len(chunk) > 1:
            _prefetch(spec, bench, method, agent, messages, chunk, log)
        for sample in chunk:
            yield _play(spec, bench, method, agent, messages, sample, start)


def _prefetch(spec, bench, method, agent, messages, chunk, log) -> None:
    """Have ``agent`` decode the chunk's replies in one batch. A sample whose message fails
    is left to fail alone in ``_play``; a batch that fails is played one sample at a time.
    ``_play`` makes each message again: transforms draw from a per-sample seed, so it is the
    same message, and the agent takes the prefetched reply only for the same prompt."""
    episodes = []
    for sample in chunk:
        with contextlib.suppress(Exception):
            episodes.append((bench.single_reply_prompt(sample), _message(spec, method, messages, sample), sample))
    if len(episodes) < 2:
        return
    try:
        agent.prefetch(episodes)
    except Exception as exc:  # e.g. out of memory at this batch size
        log(f"a batch of {len(episodes)} replies failed ({type(exc).__name__}: {exc}); playing them one at a time")


def run_cell(spec: RunSpec, store: Store, shard_root: Path, *, log=print, on_sample=None,
             on_start=None, workers: int = 1, tags: tuple[str, ...] = (),
             eval_batch: int = EVAL_BATCH, episode_workers: int = 1,
             episode_batch: int | None = None) -> CellResult:
    """Compute what is left of one cell. ``episode_batch``: None for this device's default."""
    bench = benchmarks.get(spec.benchmark)(dict(spec.benchmark_params))
    method = methods.get(spec.method)(dict(spec.method_params))
    samples = bench.samples(spec.split, spec.limit)
    if spec.limit is not None and len(samples) < spec.limit:  # the split is all there is: say so
        log(f"--limit {spec.limit}: {spec.benchmark}/{spec.split} has {len(samples)} samples; running all of them")
    done = resume_ids(store, shard_root, spec.run_key)
    todo = [s for s in samples if s.id not in done]
    writer = ShardWriter(shard_root, spec.run_key)
    if on_start:
        on_start(spec, len(samples), len(todo))
    if not todo:
        return CellResult(spec, len(samples), 0, 0)
    with writer.alive():  # a killed run is then seen as interrupted, not running forever
        try:
            return _compute_cell(spec, bench, method, samples, todo, writer, log, on_sample, workers, tags,
                                 eval_batch, episode_workers, episode_batch)
        except BaseException as exc:  # the row says how the run ended; the error goes on up
            from interlat_bench.harness.core.models import device

            writer.write_run(_run_row(spec, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                                      device(), tags))
            raise


def _compute_cell(spec, bench, method, samples, todo, writer, log, on_sample, workers, tags,
                  eval_batch, episode_workers, episode_batch) -> CellResult:
    from interlat_bench.harness.core.models import device
    from interlat_bench.trainers.receiver import load_receiver

    writer.write_run(_run_row(spec, "running", device(), tags))
    ctx = RunContext(spec=spec, benchmark=bench, log=log)
    folder = train_stage(ctx, method)
    receiver = load_receiver(folder, dtype=spec.dtype) if folder is not None else None
    # Messages for every sample of the cell, not only those left to play: the collection's
    # cache key stays that of the whole cell, and a method that draws another sample's
    # message (cross_task) draws the same one after a resume. A sender trained against the
    # receiver (compressed_k) gets it here.
    messages = method.messages(ctx, samples, receiver)
    parallel = workers > 1 and method.parallel_episodes and len(todo) > 1
    # LLM episodes of a multi-turn benchmark in processes of their own (single-reply ones batch).
    spread = EpisodeWorkers(episode_workers, None if folder is None else str(folder)) \
        if episode_workers > 1 and method.uses_model and not parallel and len(todo) > 1 \
        and bench.single_reply_prompt(todo[0]) is None else None
    agent = None if parallel or spread else method.agent(ctx, receiver)
    if spread:
        log(f"playing {len(todo)} episodes in {min(spread.n, len(todo))} processes, each with its own receiver")
    errors = successes = 0
    with progress.track(f"evaluate {spec.label()}", len(todo)) as stage, contextlib.closing(writer):
        together = episode_batch_default() if episode_batch is None else episode_batch
        for record in _records(spec, bench, method, agent, messages, todo, workers, eval_batch, log, spread,
                               together):
            if record.error:
                errors += 1
                log(f"sample {record.sample_id} failed: {record.error}")
            successes += bool(record.success)
            writer.add(
                [{"run_key": spec.run_key, "sample_id": record.sample_id, "success": record.success,
                  "score": record.score, "steps": record.steps, "metrics": record.metrics,
                  "error": record.error}],
                [{"run_key": spec.run_key, "sample_id": record.sample_id, "stage": name, "ms": ms}
                 for name, ms in record.timings_ms.items()],
            )
            stage.advance(info=f"{successes} solved, {errors} errors")
            if on_sample:
                on_sample(record)
    writer.write_run(_run_row(spec, "complete" if not errors else "partial", device(), tags))
    return CellResult(spec, len(samples), len(todo), errors)


def train_stage(ctx: RunContext, method, deepspeed: str | None = None):
    """Train the method's receiver, or find it in the checkpoint cache; its folder, or None
    for a method whose receiver is used as it is. Training messages are the sender's plans
    for the training samples, collected with the method's sender settings."""
    if method.trained_with is None:
        return None
    from interlat_bench.methods.sending import collect_plans
    from interlat_bench.trainers.receiver import train_receiver

    cfg = method.train_config(ctx.benchmark, ctx.spec.seed)
    train = ctx.benchmark.train_samples(limit=cfg.n_train, detours=cfg.detours)
    plans = collect_plans(ctx, train, method.params) if method.trained_with is not MessageKind.NONE else None
    return train_receiver(ctx.spec.receiver, method.trained_with, train, plans or {}, cfg,
                          messages_key=plans.key if plans is not None else None, dtype=ctx.spec.dtype,
                          deepspeed=deepspeed, log=ctx.log, layout=method.layout,
                          plan_prompt=ctx.benchmark.planner_prompt, sender_ref=ctx.spec.sender)


@dataclass
class CellPlan:
    spec: RunSpec
    total: int
    done: int
    trains: str  # what its receiver is trained with, "-" for none


def plan_grid(specs: list[RunSpec], db: Path) -> list[CellPlan]:
    """What ``run_grid`` would do, cell by cell, without doing or writing anything: the
    samples of each cell and how many are finished (stored or pending in shards)."""
    from interlat_bench.results.shards import pending_ids

    store = Store(db)
    out = []
    for spec in specs:
        bench = benchmarks.get(spec.benchmark)(dict(spec.benchmark_params))
        method = methods.get(spec.method)
        ids = {s.id for s in bench.samples(spec.split, spec.limit)}
        done = (pending_ids(db.parent / "shards", spec.run_key) | store.finished_ids(spec.run_key)) & ids
        trains = "-" if method.trained_with is None else f"{method.trained_with} ({method.layout})"
        out.append(CellPlan(spec, len(ids), len(done), trains))
    return out


# Another process may hold the results database for a moment (a run sharing the folder
# ingesting its shards, a notebook's query): wait this long before giving up.
LOCK_WAIT_S = 120.0


def run_grid(specs: list[RunSpec], db: Path, *, log=print, on_sample=None, on_start=None,
             workers: int = 1, tags: tuple[str, ...] = (), eval_batch: int = EVAL_BATCH,
             episode_batch: int | None = None,
             episode_workers: int = 1) -> list[CellResult]:
    """Run every cell in order. ``tags`` label the runs (not part of their keys): given again
    to a finished grid, they are added to the stored runs without computing anything."""
    store = Store(db, lock_wait=LOCK_WAIT_S, on_wait=log)
    shard_root = db.parent / "shards"
    # Load shards left by an earlier, interrupted invocation before deciding what is done.
    if any(shard_root.glob("*/*")):
        ingest(store, shard_root, warn=log)
    results = []
    try:
        for spec in specs:
            results.append(run_cell(spec, store, shard_root, log=log, on_sample=on_sample, on_start=on_start,
                                    workers=workers, tags=tags, eval_batch=eval_batch,
                                    episode_batch=episode_batch,
                                    episode_workers=episode_workers))
    finally:
        try:
            if any(shard_root.glob("*/*")):
                ingest(store, shard_root, warn=log)
            if tags:  # cells that had nothing left to compute wrote no run row
                add_tags(store, [r.spec.run_key for r in results], tags)
        except UserError as exc:  # still locked: the rows are safe in their shards
            log(f"{exc}; this run's results are kept in {shard_root} and load with the next run "
                "or `interlat-bench ingest`")
    return results
