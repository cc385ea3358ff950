"""Playing a run cell's samples into records: one at a time, single-reply episodes decoded in
prefetched batches, multi-turn episodes in lockstep, or in worker processes (reference
policies, or LLM episodes each with its own receiver). What an agent can do beyond the
``Agent`` protocol is found once (``Capabilities.of``) and decides which of these it gets.
A sample that fails becomes an error record; a batch that fails is played one at a time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from interlat_bench.benchmarks.base import Agent, Benchmark, Capabilities, Record, Sample
from interlat_bench.harness.core.message import MessageKind
from interlat_bench.harness.core.registry import benchmarks, methods
from interlat_bench.harness.core.runspec import RunSpec
from interlat_bench.harness.core.seeds import item_seed
from interlat_bench.harness.core.timing import clock_ms
from interlat_bench.methods.base import Method, RunContext

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


@dataclass
class EpisodeWorkers:
    """LLM episodes of a multi-turn benchmark played in ``n`` processes, each loading the
    receiver from ``folder`` (None: a method whose receiver is the plain model)."""

    n: int
    folder: str | None


@dataclass
class Player:
    """Plays samples of one cell: ``agent`` None where each worker process builds its own."""

    spec: RunSpec
    bench: Benchmark
    method: Method
    agent: Agent | None
    messages: dict
    log: object = print
    can: Capabilities = field(init=False)

    def __post_init__(self):
        self.can = Capabilities.of(self.agent)

    def message(self, sample: Sample):
        """The message ``sample``'s receiver gets, as changed on the way (seeded per sample)."""
        import torch

        rng = torch.Generator().manual_seed(item_seed(self.spec.seed, sample.id, "transform"))
        return self.method.transform(self.method.message_for(sample, self.messages, self.spec.seed), rng)

    def one(self, sample: Sample, start: float | None = None, agent: Agent | None = None) -> Record:
        """One sample -> Record; a failure becomes an error record (retried on the next run).
        ``start``: when the sample began to be waited for (its batch's start), else now."""
        start = clock_ms() if start is None else start
        message = None
        try:
            message = self.message(sample)
            record = self.bench.play(sample, agent or self.agent, message)
        except Exception as e:  # one broken sample must not sink the run
            record = Record.from_error(sample.id, e)
        return self.finish(record, message, start)

    def finish(self, record: Record, message, start: float, transcript_of: Agent | None = None) -> Record:
        """What every played record carries: the message's accounting, the episode's transcript,
        and the evaluation wall time of the sample as waited for: transform, receiver turns (with
        its batch's, when decoded together), environment or grading (the sender's generation ran
        before, batched, in the collection stage)."""
        if record.error is None:
            try:
                record.metrics.update(message.stats())
                if self.can.transcript:  # what `interlat-bench show` prints
                    record.metrics["transcript"] = (transcript_of or self.agent).transcript(message)
                # A message read back from the cache cost no sender time now: record none rather
                # than replay the time of the run that generated it.
                if message.kind is not MessageKind.NONE and not message.from_cache:
                    record.timings_ms.setdefault("sender", message.sender_ms)
            except Exception as e:
                record = Record.from_error(record.sample_id, e)
        record.timings_ms["wall"] = clock_ms() - start
        return record

    def records(self, todo: list[Sample], *, workers: int = 1, eval_batch: int = 1, episode_batch: int = 1,
                episode_workers: EpisodeWorkers | None = None) -> Iterator[Record]:
        """Yield a record per sample: reference policies in ``workers`` processes (no agent here),
        LLM episodes in ``episode_workers``; on a single-reply benchmark an agent that can prefetch
        decodes ``eval_batch`` replies at a time; on a multi-turn benchmark that plays games
        together, ``episode_batch`` episodes are played in lockstep."""
        if self.agent is None:
            yield from self._in_processes(todo, workers, episode_workers)
            return
        if episode_batch > 1 and len(todo) > 1 and self.bench.plays_together and self.can.lockstep:
            for at in range(0, len(todo), episode_batch):
                yield from self._together(todo[at:at + episode_batch])
            return
        batched = eval_batch > 1 and self.can.prefetch and bool(todo) \
            and self.bench.single_reply_prompt(todo[0]) is not None
        step = eval_batch if batched else 1
        for at in range(0, len(todo), step):
            chunk = todo[at:at + step]
            start = clock_ms()
            if len(chunk) > 1:
                self._prefetch(chunk)
            for sample in chunk:
                yield self.one(sample, start)

    def _prefetch(self, chunk: list[Sample]) -> None:
        """Have the agent decode the chunk's replies in one batch. A sample whose message fails
        is left to fail alone in ``one``; a batch that fails is played one sample at a time.
        ``one`` makes each message again: transforms draw from a per-sample seed, so it is the
        same message, and the agent takes the prefetched reply only for the same prompt."""
        episodes = []
        for sample in chunk:
            with contextlib.suppress(Exception):
                episodes.append((self.bench.single_reply_prompt(sample), self.message(sample), sample))
        if len(episodes) < 2:
            return
        try:
            self.agent.prefetch(episodes)
        except Exception as exc:  # e.g. out of memory at this batch size
            self.log(f"a batch of {len(episodes)} replies failed ({type(exc).__name__}: {exc}); "
                     "playing them one at a time")

    def _together(self, chunk: list[Sample]) -> Iterator[Record]:
        """Play ``chunk``'s multi-turn episodes in lockstep (``bench.play_together``), one
        ``agent.sibling()`` each, every turn's replies decoded in one batch; yield each record
        as its episode ends. A sample whose message fails fails alone; if the batch itself fails
        (e.g. out of memory), the episodes it had not finished are played one at a time."""
        start = clock_ms()
        together = []
        for sample in chunk:
            try:
                together.append((sample, self.message(sample)))
            except Exception:
                yield self.one(sample, start)
        agents = [self.agent.sibling() for _ in together]
        ended: set[int] = set()
        try:
            for i, record in self.bench.play_together([s for s, _ in together], agents, [m for _, m in together],
                                                      type(self.agent).respond_together):
                ended.add(i)
                yield self.finish(record, together[i][1], start, transcript_of=agents[i])
        except Exception as exc:
            left = [sample for i, (sample, _) in enumerate(together) if i not in ended]
            self.log(f"playing {len(together)} episodes together failed ({type(exc).__name__}: {exc}); "
                     f"playing the {len(left)} left one at a time")
            for sample in left:
                yield self.one(sample)

    def _in_processes(self, todo: list[Sample], workers: int, episode_workers: EpisodeWorkers | None):
        import multiprocessing
        import os

        # spawn: the parent holds torch/OpenMP threads a fork would break. Workers are recycled
        # because every ALFWorld game leaves a few MB behind in its process (multiprocessing.Pool:
        # ProcessPoolExecutor's max_tasks_per_child can hang on CPython 3.11, gh-115634).
        ctx_mp = multiprocessing.get_context("spawn")
        jobs = [(self.spec, s) for s in todo]
        if episode_workers is not None:  # each process loads a model: never recycled
            n = min(episode_workers.n, len(todo))
            init = (self.spec, episode_workers.folder, self.messages, max(1, (os.cpu_count() or 1) // n))
            with ctx_mp.Pool(n, initializer=_start_episode_worker, initargs=init) as pool:
                yield from pool.imap(_play_in_worker, jobs)
            return
        with ctx_mp.Pool(min(workers, len(todo)), initializer=_die_with_parent, maxtasksperchild=25) as pool:
            yield from pool.imap(_play_in_worker, jobs)


# Per worker process: the Player of the run being played, by run key.
_WORKER: dict[str, Player] = {}


def _set_up_worker(spec: RunSpec, receiver=None, messages: dict | None = None) -> None:
    bench = benchmarks.get(spec.benchmark)(dict(spec.benchmark_params))
    method = methods.get(spec.method)(dict(spec.method_params))
    _WORKER.clear()
    _WORKER[spec.run_key] = Player(spec, bench, method, method.agent(RunContext(spec=spec, benchmark=bench), receiver),
                                   messages or {})


def _start_episode_worker(spec: RunSpec, folder: str | None, messages: dict, threads: int) -> None:
    """Initializer of a process that plays LLM episodes (``--episode-workers``): its own copy
    of the receiver (loaded from the trained checkpoint ``folder``) on ``threads`` threads."""
    import torch

    from interlat_bench.trainers.checkpoint import load_receiver

    _die_with_parent()
    torch.set_num_threads(threads)
    _set_up_worker(spec, load_receiver(folder, dtype=spec.dtype) if folder is not None else None, messages)


def _play_in_worker(args) -> Record:
    """Play one sample in a worker process: (spec, sample). A reference policy's worker (no
    model, no messages) sets itself up on its first sample."""
    spec, sample = args
    if spec.run_key not in _WORKER:
        _set_up_worker(spec)
    return _WORKER[spec.run_key].one(sample)


def _die_with_parent() -> None:
    """Worker initializer: end this worker when the run's process dies, even by SIGKILL
    (Linux prctl PR_SET_PDEATHSIG); elsewhere workers finish their current episode."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
