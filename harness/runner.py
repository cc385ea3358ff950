"""The driver: every way in (``run``, ``collect``, ``train``, the lm-eval model) builds a run
cell's stages here, from the specs its method declared (``harness.core.stages``), in one
direction:

    samples -> training plans -> receiver training -> student training -> evaluation messages
            -> play (``harness.playing``) -> records (shards, then DuckDB)

``Cell`` builds each stage once, on demand, from ``spec.stages``; ``run_cell`` runs them in
order and records. Finished samples are skipped (resume), records are appended to shards as
they come and ingested into DuckDB once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from interlat_bench.harness.core import distributed, progress
from interlat_bench.harness.core.errors import UserError
from interlat_bench.harness.core.registry import benchmarks, methods
from interlat_bench.harness.core.runspec import RunSpec
from interlat_bench.harness.core.shapes import is_shape
from interlat_bench.harness.core.stages import LatentSteps, PlanCollection, SenderPass, StudentTraining
from interlat_bench.harness.playing import EVAL_BATCH, EpisodeWorkers, Player, episode_batch_default
from interlat_bench.methods.base import RunContext
from interlat_bench.results.shards import ShardWriter, ingest, resume_ids, shards_dir
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


def _run_row(spec: RunSpec, status: str, device: str | None, tags: tuple[str, ...] = (),
             n_samples: int | None = None) -> dict:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return {"run_key": spec.run_key, "method": spec.method, "benchmark": spec.benchmark,
            "split": spec.split, "sender_model": spec.sender_model, "receiver_model": spec.receiver_model, "seed": spec.seed,
            "spec": spec.to_json(), "status": status, "created_at": now, "updated_at": now,
            "git_sha": _git_sha(), "versions": _versions(), "device": device, "tags": list(tags) or None,
            "timing_only": is_shape(spec.sender_model) or is_shape(spec.receiver_model), "n_samples": n_samples}


class Cell:
    """One run cell's stages, each built once from its spec (``spec.stages``) when first needed:
    the receiver's training plans and checkpoint, the student (compressed_k), the evaluation
    messages, the agent."""

    def __init__(self, spec: RunSpec, bench=None, log=print, deepspeed: str | None = None,
                 checkpoint: Path | None = None):
        """``bench``: the benchmark, where it is not a registered one (the lm-eval model's);
        ``checkpoint``: a receiver trained before, used instead of the training stage."""
        self.spec, self.log, self.deepspeed = spec, log, deepspeed
        self.bench = bench or benchmarks.get(spec.benchmark)(dict(spec.benchmark_params))
        self.method = methods.get(spec.method)(dict(spec.method_params))
        self.stages = spec.stages or self.method.stages(self.bench, spec)
        self.ctx = RunContext(spec=spec, benchmark=self.bench, log=log)
        self._folder, self._receiver, self._training = checkpoint, None, None

    # -- receiver training -------------------------------------------------------------
    def train_config(self):
        """The receiver's training settings (``trainers.config.TrainConfig``) from its stage."""
        from interlat_bench.trainers.config import TrainConfig

        return TrainConfig(**self.stages.receiver_training.config())

    def training_data(self):
        """(training samples, the sender's plans for them or None): what the receiver trains on."""
        if self._training is None:
            stage, cfg = self.stages.receiver_training, self.train_config()
            train = self.bench.train_samples(limit=cfg.n_train, detours=cfg.detours)
            plans = collect(stage.plans, self.bench, train) if stage.plans is not None else None
            self._training = (train, plans)
        return self._training

    def warmup_plans(self):
        """The sender's plans for further training tasks, read by the adapter warm-up alone
        (``TrainConfig.warmup_plans``); None where there are none. A collection of their own, so
        that the receiver's training plans stay one collection with text's."""
        stage = self.stages.receiver_training
        if stage is None or stage.plans is None:
            return None
        train, _ = self.training_data()
        further = self.bench.warmup_samples(train, self.train_config().warmup_plans)
        return collect(stage.plans, self.bench, further) if further else None

    def checkpoint(self) -> Path | None:
        """The trained receiver's folder (trained now or found in the cache); None for a method
        whose receiver is used as it is."""
        stage = self.stages.receiver_training
        if stage is None or self._folder is not None:
            return self._folder
        from interlat_bench.trainers.receiver import train_receiver_stage

        train, plans = self.training_data()
        self._folder = train_receiver_stage(stage, train, plans, self.warmup_plans(), deepspeed=self.deepspeed,
                                            log=self.log)
        return self._folder

    def receiver(self):
        """The trained receiver, loaded (None where there is none)."""
        if self._receiver is None and self.checkpoint() is not None:
            from interlat_bench.trainers.checkpoint import load_receiver

            self._receiver = load_receiver(self.checkpoint(), dtype=self.spec.dtype)
        return self._receiver

    # -- the sender at evaluation --------------------------------------------------------
    def messages(self, samples: list) -> dict:
        """Sample id -> what the sender passes on, as shipped (``Method.shipped``)."""
        stage = self.stages.messages
        if stage is None:
            return {}
        if isinstance(stage, PlanCollection):
            return {tid: self.method.shipped(m) for tid, m in collect(stage, self.bench, samples).items()}
        tasks = self.bench.sender_tasks(samples)
        if isinstance(stage, SenderPass):
            return self._sender_pass(stage, tasks)
        return self._latent_steps(stage, tasks)

    def _sender_pass(self, stage: SenderPass, tasks) -> dict:
        from interlat_bench.collectors.training_free import send

        if stage.calibration:
            stage = self._calibrated(stage)
        with progress.track(f"send {stage.family} ({stage.sender_model})", len(tasks)) as counter:
            return send(stage, self.ctx.model(stage.sender_model), tasks, log=progress.counter(counter))

    def _calibrated(self, stage: SenderPass) -> SenderPass:
        """The sender pass with its settings fitted on training samples: each sent with the
        method's calibration settings, and read by the receiver, which reports what it attended
        to (``prefix_attention``); the method turns the mean of those into its settings."""
        from interlat_bench.collectors.training_free import send

        train = self.bench.train_samples(limit=stage.calibration)
        probe = replace(stage, settings=tuple(sorted(self.method.calibration_settings().items())), calibration=0)
        with progress.track(f"calibrate {stage.family} on {len(train)} training samples", len(train)) as counter:
            sent = send(probe, self.ctx.model(stage.sender_model), self.bench.sender_tasks(train),
                        log=progress.counter(counter))
        agent = self.method.agent(self.ctx, None)
        # A training sample's first user turn is the receiver's opening prompt.
        attention = [agent.prefix_attention(s.data["conversation"][0]["content"], sent[s.id], s) for s in train]
        settings = self.method.calibrated(sum(attention) / len(attention))
        self.log(f"{stage.family} calibrated on {len(train)} training samples: {settings}")
        return replace(stage, settings=tuple(sorted({**dict(stage.settings), **settings}.items())), calibration=0)

    def _latent_steps(self, stage: LatentSteps, tasks) -> dict:
        from interlat_bench.collectors.latent_steps import send_latent_steps

        if stage.student is None:
            model, head, who = self.ctx.model(stage.sender_model), None, stage.sender_model
            model, tokenizer = model.model, model.tokenizer
        else:
            student = self.student(stage.student)
            model, tokenizer, head, who = student.lm.model, student.lm.tokenizer, student.head, "trained student"
        with progress.track(f"send {stage.k} latent steps ({who})", len(tasks)) as counter:
            return send_latent_steps(model, tokenizer, tasks, stage.k, head=head, log=progress.counter(counter))

    def student(self, stage: StudentTraining):
        """compressed_k's student, trained against the frozen receiver on the receiver's own
        training tasks and plans (or found in the cache), loaded."""
        from interlat_bench.trainers.compression import CompressConfig, load_student, train_student

        receiver = self.receiver()
        train, plans = self.training_data()
        cfg = CompressConfig(k=stage.k, epochs=stage.epochs, lr=stage.lr, head_lr=stage.head_lr,
                             batch_size=receiver.cfg.batch_size, seed=receiver.cfg.seed)
        folder = train_student(self.spec.sender_model, receiver, receiver.folder, train, plans, cfg, messages_key=plans.key,
                               plan_prompt=self.stages.receiver_training.plan_prompt, dtype=self.spec.dtype, log=self.log)
        return load_student(folder, dtype=self.spec.dtype)

    def agent(self):
        return self.method.agent(self.ctx, self.receiver())


def collect(stage: PlanCollection, bench, samples: list) -> dict:
    """The collection stage (``collectors.plans``): the sender's plans for ``samples``, each for
    what the benchmark gives the sender (``Benchmark.sender_tasks``)."""
    from interlat_bench.collectors.plans import collect_plans

    return collect_plans(stage, bench.sender_tasks(samples))


def run_cell(spec: RunSpec, store: Store, shard_root: Path, *, log=print, on_sample=None,
             on_start=None, workers: int = 1, tags: tuple[str, ...] = (),
             eval_batch: int = EVAL_BATCH, episode_workers: int = 1,
             episode_batch: int | None = None, shard: tuple[int, int] | None = None) -> CellResult:
    """Compute what is left of one cell (``shard`` (i, n): of its samples at positions i, i + n,
    i + 2n, ... only). ``episode_batch``: None for this device's default."""
    cell = Cell(spec, log=log)
    samples = cell.bench.samples(spec.split, spec.limit)
    if spec.limit is not None and len(samples) < spec.limit:  # the split is all there is: say so
        log(f"--limit {spec.limit}: {spec.benchmark}/{spec.split} has {len(samples)} samples; running all of them")
    mine = samples if shard is None else samples[shard[0]::shard[1]]
    done = resume_ids(store, shard_root, spec.run_key)
    todo = [s for s in mine if s.id not in done]
    writer = ShardWriter(shard_root, spec.run_key)
    if on_start:
        on_start(spec, len(mine), len(todo))
    if not todo:
        return CellResult(spec, len(mine), 0, 0)
    with writer.alive():  # a killed run is then seen as interrupted, not running forever
        try:
            result = _compute_cell(cell, samples, todo, writer, on_sample, workers, tags, eval_batch,
                                   episode_workers, episode_batch, sharded=shard is not None)
            return replace(result, total=len(mine))
        except BaseException as exc:  # the row says how the run ended; the error goes on up
            from interlat_bench.harness.core.models import device

            writer.write_run(_run_row(spec, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                                      device(), tags, len(samples)))
            raise


def _compute_cell(cell: Cell, samples, todo, writer, on_sample, workers, tags, eval_batch, episode_workers,
                  episode_batch, sharded: bool = False) -> CellResult:
    from interlat_bench.harness.core.models import device

    spec, bench, method, log = cell.spec, cell.bench, cell.method, cell.log
    writer.write_run(_run_row(spec, "running", device(), tags, len(samples)))
    folder = cell.checkpoint()
    # Messages for every sample of the cell, not only those left to play: the collection's
    # cache key stays that of the whole cell, and a method that draws another sample's
    # message (cross_task) draws the same one after a resume.
    messages = cell.messages(samples)
    parallel = workers > 1 and method.parallel_episodes and len(todo) > 1
    # LLM episodes of a multi-turn benchmark in processes of their own (single-reply ones batch).
    spread = EpisodeWorkers(episode_workers, None if folder is None else str(folder)) \
        if episode_workers > 1 and method.uses_model and not parallel and len(todo) > 1 \
        and bench.single_reply_prompt(todo[0]) is None else None
    if spread:
        log(f"playing {len(todo)} episodes in {min(spread.n, len(todo))} processes, each with its own receiver")
    player = Player(spec, bench, method, None if parallel or spread else cell.agent(), messages, log)
    errors = successes = 0
    with progress.track(f"evaluate {spec.label()}", len(todo)) as stage, contextlib.closing(writer):
        together = episode_batch_default() if episode_batch is None else episode_batch
        for record in player.records(todo, workers=workers, eval_batch=eval_batch, episode_batch=together,
                                     episode_workers=spread):
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
    # A shard cannot know whether the others are done: `ingest` completes the cell once every
    # sample is in, whichever shard finishes last.
    status = "incomplete" if sharded else "complete" if not errors else "partial"
    writer.write_run(_run_row(spec, status, device(), tags, len(samples)))
    return CellResult(spec, len(samples), len(todo), errors)


def one_spec(method: str, task: str, *, sender_model: str, receiver_model: str, dtype: str, params: dict,
             split: str | None = None, settings: dict | None = None) -> RunSpec:
    """The cell `collect` and `train` name: one method on one task (its first default split;
    training reads the train split whichever split is evaluated)."""
    from interlat_bench.harness.grid import concrete_dtype, expand

    split = split or benchmarks.get(task).default_splits[0]
    specs = expand(methods_csv=method, tasks_csv=task, splits_csv=split, sender_model=sender_model, receiver_model=receiver_model,
                   dtype=concrete_dtype(dtype), method_params=params, settings=settings)
    if len(specs) != 1:
        raise UserError("give exactly one --method, --task and --split")
    return specs[0]


def train(spec: RunSpec, *, deepspeed: str | None = None, log=print) -> Path:
    """`interlat-bench train`: the receiver stage of ``spec``'s cell."""
    if spec.stages.receiver_training is None:
        raise UserError(f"method {spec.method!r} has no trained receiver")
    return Cell(spec, log=log, deepspeed=deepspeed).checkpoint()


def collect_split(task: str, split: str, *, sender_model: str, dtype: str, params: dict, limit: int | None = None,
                  keep_rows: int | None = None, settings: dict | None = None):
    """`interlat-bench collect`: the sender's plans (latent's collection stage) for a split's
    samples (``train``: the receiver's training tasks)."""
    spec = one_spec("latent", task, sender_model=sender_model, receiver_model=sender_model, dtype=dtype, params=params,
                    settings=settings)
    bench = benchmarks.get(task)(dict(spec.benchmark_params))
    samples = bench.train_samples(limit) if split == "train" else bench.samples(split, limit)
    return collect(replace(spec.stages.messages, keep_rows=keep_rows), bench, samples)


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
        done = (pending_ids(shards_dir(db), spec.run_key) | store.finished_ids(spec.run_key)) & ids
        trains = "-" if method.trained_with is None else f"{method.trained_with} ({method.layout})"
        out.append(CellPlan(spec, len(ids), len(done), trains))
    return out


# Another process may hold the results database for a moment (a run sharing the folder
# ingesting its shards, a notebook's query): wait this long before giving up.
LOCK_WAIT_S = 120.0


def run_grid(specs: list[RunSpec], db: Path, *, log=print, on_sample=None, on_start=None,
             workers: int = 1, tags: tuple[str, ...] = (), eval_batch: int = EVAL_BATCH,
             episode_batch: int | None = None,
             episode_workers: int = 1, shard: tuple[int, int] | None = None) -> list[CellResult]:
    """Run every cell in order. ``tags`` label the runs (not part of their keys): given again
    to a finished grid, they are added to the stored runs without computing anything.
    ``shard`` (i, n): this process computes the i-th of n fixed parts of every cell (a job
    array's task) and only writes shards, which `ingest` loads once the array is done; the
    database is read, never written, so that n processes may share one results folder."""
    store = Store(db, lock_wait=LOCK_WAIT_S, on_wait=log)
    shard_root = shards_dir(db)
    # Under torchrun or accelerate every rank runs the grid: the stages before evaluation are
    # collective (the collection splits its batches, training its data) and each rank plays
    # its part of every cell's samples, on its own device; rank 0 ingests when all are done.
    rank, world, owned = distributed.join() if shard is None else (0, 1, False)
    if world > 1:
        shard = (rank, world)
    # Load shards left by an earlier, interrupted invocation before deciding what is done.
    if shard is None and any(shard_root.glob("*/*")):
        ingest(store, shard_root, warn=log)
    results = []
    try:
        for spec in specs:
            results.append(run_cell(spec, store, shard_root, log=log, on_sample=on_sample, on_start=on_start,
                                    workers=workers, tags=tags, eval_batch=eval_batch,
                                    episode_batch=episode_batch,
                                    episode_workers=episode_workers, shard=shard))
    finally:
        if shard is None:
            _ingest_at_end(store, shard_root, results, tags, log)
    if world > 1:
        distributed.barrier(world)
        if rank == 0:
            _ingest_at_end(store, shard_root, results, tags, log)
        distributed.barrier(world)  # the others read the database only once it holds every rank's part
        distributed.leave(owned)
    elif shard is not None:
        log(f"shard {shard[0]}/{shard[1]}: results stay in {shard_root} until `interlat-bench ingest`")
    return results


def _ingest_at_end(store, shard_root, results, tags, log) -> None:
    """Load what the grid wrote and tag its runs; a database still locked keeps them in shards."""
    try:
        if any(shard_root.glob("*/*")):
            ingest(store, shard_root, warn=log)
        if tags:  # cells that had nothing left to compute wrote no run row
            add_tags(store, [r.spec.run_key for r in results], tags)
    except UserError as exc:  # still locked: the rows are safe in their shards
        log(f"{exc}; this run's results are kept in {shard_root} and load with the next run "
            "or `interlat-bench ingest`")
