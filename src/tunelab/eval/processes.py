"""Evaluation across processes on one machine: `--nproc N` of eval, robustness, bias and the
quickstart.

Inside `with EvalProcesses(n):`, every evaluation of a model that can be loaded again (its
`LoadedModel.recipe`: a base model spec, a run directory) is split into n contiguous shares of
its items: this process scores the first share, n - 1 worker processes (started once, each
loading a model the first time it is asked for it and keeping the last two) score the others,
and the shares' outputs come back here in item order, where the metrics, bootstrap intervals
and files are computed and written as for one process. Every item keeps its index, so its
shots are the ones one process gives it. A worker checks that what it loaded is the model
asked for (the same fingerprint, models/fingerprint.py; a model whose weights the result cache
knows stays unloaded, here and in the workers, until an item is not cached:
models/known_weights.py); a model changed since it was loaded, or one that exists only in this
process, is scored here alone. Each process runs
`threads` intra-op threads (default: the cores divided among the processes).
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from tunelab.core.deferred import torch  # imported when a share is scored
from tunelab.core.errors import TunelabError
from tunelab.eval.output_types import Outputs, Request, get_output_type
from tunelab.eval.output_types.base import Framing
from tunelab.eval.result_cache import ResultCache
from tunelab.eval.shard import Shard, merged
from tunelab.models.known_weights import OtherWeights, scoring
from tunelab.models.loader import places_on_gpu

if TYPE_CHECKING:
    from tunelab.config import TaskConfig
    from tunelab.data import Record
    from tunelab.eval.output_types import OutputType
    from tunelab.models import LoadedModel
    from tunelab.models.kinds import Recipe

KEPT_MODELS = 2
"""Models a worker keeps loaded (a study's base and fine-tuned system)."""
NPROC_VARIABLE = "TUNELAB_EVAL_NPROC"


def default_processes() -> int:
    """Processes an evaluation runs in when --nproc is not given: $TUNELAB_EVAL_NPROC, else 1.
    Measured on 2 AVX2 cores with the built-in model (benchmarks/processes_speed.py, a quiet
    machine), one process on both cores as threads scored 32 items faster than two processes
    on one core each (generation 4.9 vs 5.9 s at 0 shots, 19.8 vs 23.8 s at 4; multiple
    choice 17.4 vs 18.4 s), and each worker costs a start (about 10 s) and a model's memory;
    two processes won only while another job held one of the cores. On 2 AVX-512 cores with
    native bf16: 3.4 vs 3.8 s, 4.8 vs 4.8 s, 11.9 vs 10.8 s, a tenth at most for the workers,
    after their 5-6 s start."""
    asked = os.environ.get(NPROC_VARIABLE, "").strip()
    if not asked:
        return 1
    try:
        return max(1, int(asked))
    except ValueError:
        raise TunelabError(f"{NPROC_VARIABLE}={asked!r}: give a whole number of processes, "
                           "e.g. 2") from None


@dataclass
class Share:
    """What a worker scores: a recipe's model (checked by fingerprint) on some of the items."""

    recipe: Recipe
    fingerprint: str
    task: TaskConfig
    records: list[Record]
    pool: list[Record]
    shots: int
    system: str
    framing: Framing | None
    first_index: int
    cached: bool = True
    """Whether the items are looked up in the result cache (the request's `results`)."""


@dataclass
class Failure:
    """A worker's error: a TunelabError's line, or another exception's traceback."""

    message: str
    user_error: bool


class ModelChanged(Exception):
    """The worker's model is not the one asked for (its weights changed since loading)."""


_ACTIVE: list[EvalProcesses] = []


def active() -> EvalProcesses | None:
    """The processes evaluations are split over now, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def run_request(output_type: OutputType, request: Request) -> Outputs:
    """`output_type.run(request)`, split over the active processes where it can be."""
    processes = active()
    return processes.run(output_type, request) if processes else output_type.run(request)


def run_requests(output_type: OutputType, requests: Sequence[Request]) -> list[Outputs]:
    """`output_type.run_all(requests)` (versions of the same items, one model pass over all),
    or each request split over the active processes where there are workers to share it."""
    processes = active()
    if processes is not None and processes.has_workers:
        return [processes.run(output_type, request) for request in requests]
    return output_type.run_all(requests)


class EvalProcesses:
    """This process and n - 1 workers scoring shares of each evaluation (see module doc)."""

    def __init__(self, n: int | None = None, threads: int | None = None) -> None:
        if n is not None and n < 1:
            raise TunelabError(f"--nproc {n}: give 1 or more processes")
        self.chosen = n
        """The processes asked for (None: `default_processes()`)."""
        self.asked_threads = threads
        self._workers: list[tuple[Any, Connection]] = []  # Any: a spawned Process
        self._warned = False

    @property
    def n(self) -> int:
        return self.chosen if self.chosen is not None else default_processes()

    @property
    def threads(self) -> int:
        return self.asked_threads or max(1, (os.cpu_count() or 1) // self.n)

    @property
    def has_workers(self) -> bool:
        """Whether other processes score shares here (one process: everything runs here)."""
        return bool(self._workers)

    def __enter__(self) -> EvalProcesses:
        self._start()
        _ACTIVE.append(self)
        return self

    def _start(self) -> None:
        """The n - 1 workers (each a fresh interpreter: no forked threads); none where the
        models are on a GPU (each worker would hold its own copy on it, for no speed)."""
        if self.n > 1 and places_on_gpu():
            print(f"tunelab: --nproc {self.n}: the models are on the GPU here "
                  "(models/loader.py: placed), so evaluation runs in one process")
            self.chosen = 1
        context = multiprocessing.get_context("spawn")
        for _ in range(self.n - 1):
            here, there = context.Pipe()
            worker = context.Process(target=_serve, args=(there, self.threads), daemon=True)
            worker.start()
            there.close()
            self._workers.append((worker, here))

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.remove(self)
        for worker, connection in self._workers:
            try:
                connection.send(None)
            except (BrokenPipeError, OSError):
                pass
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
        self._workers.clear()

    def run(self, output_type: OutputType, request: Request) -> Outputs:
        """The request's outputs, its items scored in shares by every process."""
        recipe = request.lm.recipe
        if recipe is None or len(request.records) < self.n or not self._workers:
            return output_type.run(request)
        fingerprint = request.lm.fingerprint()  # a deferred model stays unloaded
        bounds = [Shard(self.n, rank).bounds(len(request.records)) for rank in range(self.n)]
        for (start, end), (_, connection) in zip(bounds[1:], self._workers, strict=True):
            connection.send(Share(recipe, fingerprint, request.task, request.records[start:end],
                                  request.pool, request.shots, request.system, request.framing,
                                  request.first_index + start, request.results is not None))
        start, end = bounds[0]
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # while the workers run too (not while training)
        try:
            shares = [output_type.run(replace(request, records=request.records[start:end]))]
        finally:
            torch.set_num_threads(threads)
        for (start, end), (_, connection) in zip(bounds[1:], self._workers, strict=True):
            reply = connection.recv()
            if isinstance(reply, Failure):
                if reply.user_error:
                    raise TunelabError(reply.message)
                raise RuntimeError(f"an evaluation worker failed:\n{reply.message}")
            if reply is None:  # the worker's model is not this one: score the share here
                self._warn_changed()
                reply = output_type.run(replace(request, records=request.records[start:end],
                                                first_index=request.first_index + start))
            for row in reply.rows:
                row["index"] += start
            shares.append(reply)
        return merged(shares)

    def _warn_changed(self) -> None:
        if not self._warned:
            warnings.warn("the model's weights differ from what loads from disk; its shares "
                          "were scored in this process alone", stacklevel=3)
            self._warned = True


def _serve(connection: Connection, threads: int) -> None:
    """A worker: score each Share sent, until None arrives."""
    os.environ["TQDM_DISABLE"] = "1"
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")  # this process's warnings come from the main one
    models: OrderedDict[str, LoadedModel] = OrderedDict()
    while (share := connection.recv()) is not None:
        try:
            connection.send(_score(share, models))
        except (ModelChanged, OtherWeights):  # not the weights asked for: scored there
            connection.send(None)
        except TunelabError as err:
            connection.send(Failure(str(err), True))
        except Exception:  # noqa: BLE001  (handed to the main process, which raises it)
            connection.send(Failure(traceback.format_exc(), False))


def _score(share: Share, models: OrderedDict[str, LoadedModel]) -> Outputs:
    key = repr(share.recipe)  # recipes hold configs (unhashable); their repr names them
    lm = models.pop(key, None) or scoring(share.recipe, share.fingerprint)  # loaded if a miss
    models[key] = lm
    while len(models) > KEPT_MODELS:
        models.popitem(last=False)
    if lm.fingerprint() != share.fingerprint:
        raise ModelChanged
    request = Request(lm, share.task, share.records, share.pool, share.shots, share.system,
                      share.framing, first_index=share.first_index,
                      results=ResultCache.default() if share.cached else None)
    return get_output_type(share.task.output_type).run(request)
