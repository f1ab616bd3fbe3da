"""Many calls of one plain function: in this process, or as Ray tasks, at most `workers` in flight.

    results = run_calls(run_cell, [((cell, data), {}) for cell in cells], workers=2, on_result=record)

The Ray path is Ray's own "limit pending tasks" pattern: submit up to `workers` tasks, `ray.wait` for the
first to finish, submit the next. Each task asks for its resources (`requested_options`: a CPU share, a
GPU where GPUs are declared), sets torch's threads to its CPU share, and is retried MAX_RETRIES times if its
worker process dies. `on_result(i, result)` runs as each call finishes, in the driver, so a caller can
record finished work (a shard in a manifest) before the next one lands; on an error, Ctrl-C or SIGTERM the
tasks in flight are cancelled and everything recorded so far stays recorded.

A task Ray's memory monitor kills is re-run once (RAY_task_oom_retries, set by cluster.connect; Ray's own
default retries it forever); if it is killed again, run_calls raises ValueError naming the call, the memory
it had, and what to change.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

MAX_RETRIES = 3  # Ray re-runs a task whose worker process died this many times (not for memory: see above)

Call = tuple[tuple, dict]  # (args, kwargs)


def _with_threads(fn: Callable, cpus: float, args: tuple, kwargs: dict):
    from rdistill.distributed.cluster import limit_threads

    limit_threads(cpus)
    return fn(*args, **kwargs)


def submit(fn: Callable, *args, options: dict, **kwargs):
    """fn(*args, **kwargs) as one Ray task with `options` (requested_options: num_cpus, num_gpus, ...); its ref.
    Retried MAX_RETRIES times if its worker dies; torch's threads set to its CPU share."""
    import ray

    remote = ray.remote(max_retries=MAX_RETRIES)(_with_threads).options(**options)
    return remote.remote(fn, options.get("num_cpus", 1), args, kwargs)


def describe_call(fn: Callable, call: Call) -> str:
    """A call as a user can find it: the function and its first argument (a cell, a task)."""
    args, _ = call
    return f"{getattr(fn, '__name__', 'task')}({args[0]!r}{', ...' if len(args) > 1 else ''})" if args else fn.__name__


def out_of_memory(what: str, error: Exception) -> ValueError:
    """The one-line error of a call Ray's memory monitor killed: which call, how much memory, what to change."""
    text = str(error)
    used = re.search(r"memory used[=:]\s*([\d.]+)\s*(GB|GiB)", text, re.IGNORECASE)
    node = re.search(r"was ([\d.]+GB / [\d.]+GB)", text)
    amount = f"{used.group(1)} {used.group(2)} in use" if used else "memory use unknown"
    if node:
        amount += f", node at {node.group(1)}"
    return ValueError(f"{what} was killed by Ray's memory monitor twice ({amount}): give it less to hold "
                      "(a smaller --image-size or --batch-size) or run fewer at once (--workers)")


def run_calls(fn: Callable, calls: Sequence[Call], *, workers: int, address: str | None = None,
              use_gpu: bool | None = None, on_result: Callable[[int, object], None] | None = None,
              options: dict | None = None, wait: float = 600.0) -> list:
    """fn(*args, **kwargs) for each call; results in call order. workers=0: here, one after another;
    workers > 0: Ray tasks on the Ray at `address` (default: the connected one, else a local one), each
    asking `options` (declared: cluster.requested_options, custom resources), or without them one CPU (and
    one GPU with use_gpu). A request no node holds fails after `wait` seconds (cluster.wait_for_resources)."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = no Ray), got {workers}")
    results = [None] * len(calls)

    def done(i: int, result) -> None:
        results[i] = result
        if on_result is not None:
            on_result(i, result)

    if workers == 0:
        for i, (args, kwargs) in enumerate(calls):
            done(i, fn(*args, **kwargs))
        return results

    from rdistill.distributed.cluster import connect, requested_options, wait_for_resources

    ray = connect(address)
    opts = dict(options) if options is not None else requested_options(gpus=1.0 if use_gpu else 0.0)
    wait_for_resources({"CPU": opts.get("num_cpus", 1), "GPU": opts.get("num_gpus", 0), **opts.get("resources", {})},
                       timeout=wait, poll=min(1.0, wait / 4))
    queue, running = list(reversed(range(len(calls)))), {}  # pop() takes the calls in order
    try:
        while queue or running:
            while queue and len(running) < workers:
                i = queue.pop()
                args, kwargs = calls[i]
                running[submit(fn, *args, options=opts, **kwargs)] = i
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                i = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.OutOfMemoryError as e:
                    raise out_of_memory(describe_call(fn, calls[i]), e) from None
                done(i, result)
    finally:
        for ref in running:  # nothing keeps running behind an error or an interrupt
            ray.cancel(ref, force=True)
    return results
