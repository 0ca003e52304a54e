"""Where a batch's items run: worker processes on this machine, or Ray tasks on a cluster.

A backend maps a top-level (picklable) function over a list of items and yields each result as it
arrives, in whatever order items finish, as :class:`Done` records. The function reports its own
errors in its result (an exception it raises stops the map and is raised to the caller); what a
backend adds is surviving the death of the process that runs an item (a kill, the out-of-memory
killer, a lost node): that item is run again, up to ``max_attempts`` times in all, and only then
reported as failed, while every other item goes on.
"""

from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.connection
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

RAY_MISSING = "the ray backend needs Ray; install it with pip install 'dream3d[ray]'"


@dataclass
class Done:
    """One item's outcome: ``value`` is the function's result, or ``None`` with ``error`` set when
    every attempt died; ``attempts`` counts the processes that ran it (``None``: not known)."""

    index: int
    value: Any
    attempts: int | None
    error: str | None = None


class LocalBackend:
    """``workers`` processes on this machine (spawned; 0 runs the items in this process).

    A worker that dies while it runs an item is replaced and the item goes back to the front of
    the queue. ``initializer(worker_number)`` runs first in each worker (e.g. to share out the
    CPU threads or the GPUs).
    """

    name = "local"

    def __init__(self, workers: int = 1, max_attempts: int = 3, initializer: Callable[[int], None] | None = None):
        if workers < 0:
            raise UserError(f"--workers must be 0 or more, got {workers}")
        if max_attempts < 1:
            raise UserError(f"--max-attempts must be at least 1, got {max_attempts}")
        self.workers, self.max_attempts, self.initializer = workers, max_attempts, initializer

    def map(self, fn: Callable[[Any], Any], items: list) -> Iterator[Done]:
        if self.workers == 0:
            if self.initializer is not None:
                self.initializer(0)
            for i, item in enumerate(items):
                yield Done(i, fn(item), 1)
            return
        ctx = multiprocessing.get_context("spawn")
        queue = collections.deque(range(len(items)))
        attempts = [0] * len(items)
        started = idle_deaths = 0
        procs: dict[Any, list] = {}  # connection -> [process, index of the running item or None]

        def start() -> None:
            nonlocal started
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(theirs, fn, self.initializer, started), daemon=True)
            proc.start()
            theirs.close()
            procs[ours] = [proc, None]
            started += 1

        try:
            for _ in range(min(self.workers, len(items))):
                start()
            left = len(items)
            while left:
                for conn, slot in procs.items():
                    if slot[1] is None and queue:
                        index = queue.popleft()
                        try:
                            conn.send((index, items[index]))
                        except OSError:  # died idle: wait() reports it below
                            queue.appendleft(index)
                            continue
                        slot[1] = index
                        attempts[index] += 1
                ready = multiprocessing.connection.wait([*procs, *(slot[0].sentinel for slot in procs.values())])
                for conn in [c for c in list(procs) if c in ready or procs[c][0].sentinel in ready]:
                    proc, index = procs[conn]
                    try:
                        message = conn.recv()
                    except (EOFError, OSError):  # the worker died
                        message = None
                    if message is not None:
                        index, ok, value = message
                        if not ok:
                            raise value  # the function itself raised: not a death, so no retry
                        procs[conn][1] = None
                        left -= 1
                        yield Done(index, value, attempts[index])
                        continue
                    del procs[conn]
                    conn.close()
                    proc.join()
                    reason = _exit_reason(proc.exitcode)
                    if index is None:  # died with nothing to do: at start-up, or its pipe broke
                        idle_deaths += 1
                        if idle_deaths > self.workers * self.max_attempts:
                            raise RuntimeError(f"batch workers die before they run anything ({reason})")
                    elif attempts[index] < self.max_attempts:
                        queue.appendleft(index)
                    else:
                        left -= 1
                        yield Done(index, None, attempts[index], f"worker died ({reason}) on every attempt")
                    if queue and len(procs) < self.workers:
                        start()
        finally:
            for conn in procs:
                try:
                    conn.send(None)
                except OSError:
                    pass
            for conn, (proc, _) in list(procs.items()):
                proc.join(timeout=60)  # after Ctrl-C a worker saves its run's checkpoint first
                if proc.is_alive():
                    proc.terminate()
                    proc.join()
                conn.close()
            procs.clear()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {-code}"
    return f"exit code {code}"


def _serve(conn, fn, initializer, number: int) -> None:
    """A worker: run the items the parent sends, send back ``(index, result)``, stop on ``None``."""
    try:
        if initializer is not None:
            initializer(number)
        while (message := conn.recv()) is not None:
            index, item = message
            try:
                conn.send((index, True, fn(item)))
            except Exception as e:  # the parent raises it
                try:
                    conn.send((index, False, e))
                except Exception:  # an exception that does not pickle
                    conn.send((index, False, RuntimeError(f"{type(e).__name__}: {e}")))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # Ctrl-C reached the whole process group, or the parent has gone: stop quietly


class RayBackend:
    """One Ray task per item on the cluster at ``address`` (``ray.init(address=...)``; ``None``: a
    Ray started on this machine, with ``local_cpus`` CPUs, and stopped again when the map ends).

    Each task asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs; ``num_gpus=None`` asks for one GPU
    when the cluster has any and ``wants_gpu`` is not ``False`` (the run's device: ``True`` for
    CUDA, ``False`` for the CPU, ``None`` for "CUDA if there is one"). Ray itself runs again a task
    whose worker or node died (``max_attempts`` times in all).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float | None = None,
        wants_gpu: bool | None = None,
        max_attempts: int = 3,
        local_cpus: int | None = None,
    ):
        if max_attempts < 1:
            raise UserError(f"--max-attempts must be at least 1, got {max_attempts}")
        self.address, self.num_cpus, self.num_gpus, self.wants_gpu = address, num_cpus, num_gpus, wants_gpu
        self.max_attempts, self.local_cpus = max_attempts, local_cpus
        self.ray = import_ray()

    def start(self) -> bool:
        """Connect to (or start) Ray unless connected; returns whether this call connected."""
        if self.ray.is_initialized():
            return False
        options = {"include_dashboard": False, "configure_logging": False}
        if self.address is None:
            options["num_cpus"] = self.local_cpus
        try:
            self.ray.init(address=self.address, **options)
        except ConnectionError as e:
            raise UserError(f"cannot reach the Ray cluster at '{self.address}' ({e}); check --address") from None
        return True

    def cluster_cpus(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 1))

    def gpus_per_task(self) -> float:
        if self.num_gpus is not None:
            return self.num_gpus
        if self.wants_gpu is False:
            return 0
        has_gpus = self.ray.cluster_resources().get("GPU", 0) > 0
        if self.wants_gpu and not has_gpus:
            raise UserError("the run asks for CUDA but the Ray cluster has no GPU; use device=cpu or a GPU cluster")
        return 1 if has_gpus else 0

    def map(self, fn: Callable[[Any], Any], items: list) -> Iterator[Done]:
        ray = self.ray
        connected = self.start()
        try:
            task = ray.remote(fn).options(
                num_cpus=self.num_cpus, num_gpus=self.gpus_per_task(), max_retries=self.max_attempts - 1
            )
            running = {task.remote(item): i for i, item in enumerate(items)}
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    index = running.pop(ref)
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # the function itself raised: raise it here
                        if isinstance(e.cause, UserError):
                            raise e.cause from None
                        raise
                    except ray.exceptions.RayError as e:  # every attempt's worker or node died
                        reason = str(e).strip().splitlines()[0][:300]
                        yield Done(index, None, self.max_attempts, f"Ray task failed: {reason}")
                        continue
                    yield Done(index, value, None)
        finally:
            if connected:
                ray.shutdown()


def gpu_wanted(device: str | None) -> bool | None:
    """Whether a run on ``device`` uses a GPU: ``True`` (CUDA), ``False`` (CPU), ``None`` (if there is one)."""
    return None if device is None else str(device).startswith("cuda")


def import_ray():
    try:
        import ray  # noqa: PLC0415 - optional: only the ray backend needs it
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray
