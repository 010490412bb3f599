"""Data-parallel runs on torch.distributed, through one reduce hook.

A run started by torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment) gets a
:class:`Dist` with the process group initialised: gloo on the CPU, NCCL on CUDA (each rank on its
``LOCAL_RANK`` device). Every walk over data takes this rank's shard (:meth:`Dist.shard`) and sums
what it computed over ranks (:meth:`Dist.sum`): gradients, Hessian-vector products, selection
statistics, metric sums. Solvers only see ``op(v)`` and so run unchanged, identically on every
rank. Rank 0 alone writes files and prints.

A failure on one rank must not leave the others hanging in a collective: the failing rank posts
its one-line error and exit code in the rendezvous store (:meth:`Dist.post_failure`) before it
exits; a rank whose collective then breaks reads them back (:meth:`Dist.failure`) and exits with
the same line and code. Collectives time out after ``GIF_DIST_TIMEOUT`` seconds (default 600).
"""
from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as tdist

from .errors import GifError, UsageError

_FAILURE_KEY = "gif_failure"
_DONE_KEY = "gif_done"
SETTLE_SECONDS = 30.0


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly one-process) data-parallel run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's share of ``items`` (every world-th, starting at the rank)."""
        return items[self.rank::self.world] if self.enabled else items

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place; returns it."""
        if self.enabled:
            tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
        return tensor

    def sum_scalars(self, *values: float) -> list[float]:
        """Sums over ranks of a few Python numbers (in float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self.collective_device())
        return self.sum(t).cpu().tolist()

    def max_scalars(self, *values: float) -> list[float]:
        """Maxima over ranks of a few Python numbers."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self.collective_device())
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return t.cpu().tolist()

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenation over ranks (in rank order) of 1-D tensors of any lengths."""
        if not self.enabled:
            return tensor
        dev = self.collective_device()
        n = torch.tensor([tensor.numel()], device=dev)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        tdist.all_gather(sizes, n)
        longest = int(max(int(s) for s in sizes))
        padded = torch.zeros(longest, dtype=tensor.dtype, device=dev)
        padded[: tensor.numel()] = tensor.to(dev)
        parts = [torch.zeros_like(padded) for _ in range(self.world)]
        tdist.all_gather(parts, padded)
        return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)]).to(tensor.device)

    def agree(self, value: str) -> None:
        """Raise on every rank unless every rank holds the same ``value`` (e.g. a weights hash)."""
        if not self.enabled:
            return
        values: list[Optional[str]] = [None] * self.world
        tdist.all_gather_object(values, value)
        if len(set(values)) != 1:
            raise GifError(f"the ranks disagree: {sorted(set(values))}")

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def collective_device(self) -> torch.device:
        if self.enabled and tdist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def settle(self, seconds: float = SETTLE_SECONDS) -> None:
        """Wait (at most ``seconds``, through the rendezvous store) until every rank has finished the
        command, so that no rank tears its process group down while another still holds it: a rank
        that destroyed its gloo group and exited first was seen to abort at exit ("terminate called
        without an active exception", about one torchrun in sixteen on 2 cores). A rank that left for
        good is not waited for longer than ``seconds``."""
        store = _store()
        if store is None or not self.enabled:
            return
        try:
            store.add(_DONE_KEY, 1)
            end = time.monotonic() + seconds
            while int(store.add(_DONE_KEY, 0)) < self.world and time.monotonic() < end:
                time.sleep(0.01)
        except Exception:  # the store went away with rank 0: nothing left to wait for
            pass

    # -- failures ------------------------------------------------------------------------------
    def post_failure(self, message: str, exit_code: int) -> None:
        """Leave this rank's error where the other ranks find it (first one wins)."""
        store = _store()
        if store is None:
            return
        try:
            store.compare_set(_FAILURE_KEY, "", json.dumps({"rank": self.rank, "message": message,
                                                            "exit_code": exit_code}))
        except Exception:  # the store went away with rank 0: nothing left to tell
            pass

    def failure(self, wait_seconds: float = 5.0) -> Optional[dict]:
        """The error another rank posted, if any (waits a little for it to arrive)."""
        store = _store()
        if store is None:
            return None
        try:
            store.set_timeout(datetime.timedelta(seconds=wait_seconds))
            store.wait([_FAILURE_KEY])
            return json.loads(store.get(_FAILURE_KEY))
        except Exception:
            return None


SINGLE = Dist()
_STATE: dict = {"dist": SINGLE}


def _store():
    if not tdist.is_available() or not tdist.is_initialized():
        return None
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:
        return None


def current() -> Dist:
    """The Dist of this process (SINGLE unless :func:`from_environment` started a group)."""
    return _STATE["dist"]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def from_environment(device: torch.device) -> Dist:
    """Join the process group torchrun describes, or return SINGLE for a one-process run."""
    if not launched_by_torchrun():
        return SINGLE
    if _STATE["dist"].enabled:
        return _STATE["dist"]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    timeout = datetime.timedelta(seconds=float(os.environ.get("GIF_DIST_TIMEOUT", "600")))
    try:
        tdist.init_process_group(backend, timeout=timeout)
    except Exception as exc:
        raise UsageError(f"cannot join the distributed run ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    _STATE["dist"] = Dist(rank, world, local)
    return _STATE["dist"]


def shutdown() -> None:
    if _STATE["dist"].enabled and tdist.is_initialized():
        tdist.destroy_process_group()
    _STATE["dist"] = SINGLE
