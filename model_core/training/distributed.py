"""Data-parallel training on one node: N worker processes (one per GPU; CPU processes on gloo), rendezvous on
127.0.0.1 only.

    launch_workers([python, "-m", "components.train_worker", ...], nproc=4)   # in the train step's pod
    # in each worker:
    init_process_group()                   # RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the launcher
    train_report_model(cfg, out_dir)       # the single-process entry point; DeepSpeed finds the group ready

Why not the `deepspeed` or `torchrun` launcher: their rendezvous store (c10d TCPStore through env://) listens on
all interfaces. The ranks of one node share a pod, so rank 0 binds the store's socket to 127.0.0.1 itself and hands
it to TCPStore (`master_listen_fd`), and gloo / NCCL bootstrap on the loopback interface (GLOO_SOCKET_IFNAME,
NCCL_SOCKET_IFNAME = lo). A single process goes through the same store (`ensure_process_group`), so DeepSpeed never
opens one of its own.

What the trainer asks of this module: `rank`, `world_size`, `is_main_process` (rank 0 alone writes checkpoints,
the model directory and metrics), `shard` (each rank's share of an epoch, the same count on every rank),
`all_reduce_sums` (loss terms over all ranks), `gather_to_main` (ZeRO's per-rank optimizer state for the
checkpoint), `per_rank_states` (back again on resume), `require_engine` (no silent single-process fallback in a
multi-process run) and `agree_on_weights` (ranks that disagree after training are an error).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import os
import socket
import subprocess
import time

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
LOOPBACK_INTERFACE = "lo"
RENDEZVOUS_TIMEOUT = datetime.timedelta(minutes=30)   # ZeRO collectives wait this long for a slow rank
ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if _initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- joining the group

def _launcher_env() -> dict:
    missing = [key for key in ENV_KEYS if not os.environ.get(key)]
    if missing:
        raise RuntimeError(f"distributed training needs {', '.join(missing)} in the environment (set by "
                           "launch_workers)")
    values = {}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"):
        if not os.environ[key].isdigit():
            raise RuntimeError(f"{key} must be a non-negative integer")
        values[key] = int(os.environ[key])
    if os.environ["MASTER_ADDR"] not in (LOOPBACK, "localhost"):
        raise RuntimeError(f"MASTER_ADDR must be {LOOPBACK}: the workers of one node rendezvous on the loopback "
                           "interface only")
    if not values["RANK"] < values["WORLD_SIZE"]:
        raise RuntimeError("RANK must be smaller than WORLD_SIZE")
    return values


def _loopback_store(port: int, world: int, is_master: bool) -> dist.TCPStore:
    if not is_master:
        return dist.TCPStore(LOOPBACK, port, world, False, RENDEZVOUS_TIMEOUT)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    sock.listen(max(64, 2 * world))
    return dist.TCPStore(LOOPBACK, port, world, True, RENDEZVOUS_TIMEOUT, master_listen_fd=sock.detach())


def init_process_group() -> None:
    """Join the group the launcher's environment describes: NCCL on GPUs (this rank's GPU = LOCAL_RANK), gloo on
    CPUs; the store on 127.0.0.1. A no-op when a group exists."""
    if _initialized():
        return
    env = _launcher_env()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", LOOPBACK_INTERFACE)
    os.environ.setdefault("NCCL_SOCKET_IFNAME", LOOPBACK_INTERFACE)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(env["LOCAL_RANK"])
    store = _loopback_store(env["MASTER_PORT"], env["WORLD_SIZE"], env["RANK"] == 0)
    dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=env["RANK"],
                            world_size=env["WORLD_SIZE"], timeout=RENDEZVOUS_TIMEOUT)
    log.info("rank %d of %d joined (%s, store on %s:%d)", env["RANK"], env["WORLD_SIZE"], "nccl" if cuda else "gloo",
             LOOPBACK, env["MASTER_PORT"])


def ensure_process_group() -> None:
    """A group for DeepSpeed: the launcher's when there is one, else a world of one on the loopback store."""
    if _initialized():
        return
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", LOOPBACK)):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    init_process_group()


def destroy_process_group() -> None:
    if _initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- what the trainer calls

def require_engine(engine) -> None:
    """In a multi-process run the plain-PyTorch fallback would train N unsynchronised models: refuse it."""
    if engine is None and world_size() > 1:
        raise RuntimeError(f"DeepSpeed could not initialise in a {world_size()}-process run; the single-process "
                           "fallback would let the ranks diverge, so training stops here")


def shard(indices: list[int]) -> list[int]:
    """This rank's share of an epoch's `indices` (the same list on every rank): every world_size-th one, padded by
    wrapping around so that every rank gets the same count — a rank with one batch more would wait forever in
    the gradient all-reduce (torch's DistributedSampler does the same)."""
    world = world_size()
    if world == 1 or not indices:
        return list(indices)
    total = math.ceil(len(indices) / world) * world
    padded = (list(indices) * math.ceil(total / len(indices)))[:total]
    return padded[rank():total:world]


def all_reduce_sums(sums: dict[str, float], count: int) -> tuple[dict[str, float], int]:
    """Per-term sums and the example count added up over all ranks (the epoch's loss means of the whole run)."""
    if world_size() == 1:
        return sums, count
    keys = sorted(sums)
    tensor = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64, device=_device())
    dist.all_reduce(tensor)
    values = tensor.cpu().tolist()
    return dict(zip(keys, values[:-1])), int(values[-1])


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def gather_to_main(obj) -> list | None:
    """[obj of rank 0, obj of rank 1, …] on rank 0 (tensors moved to the CPU first), None on the others.
    Every rank must call it."""
    obj = _to_cpu(obj)
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size() if is_main_process() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def per_rank_states(saved) -> list:
    """The optimizer states a checkpoint holds, one per rank (a checkpoint of one process may hold a bare dict);
    ZeRO partitions its state by rank, so a run resumes only with the world size that wrote it."""
    states = saved if isinstance(saved, list) else [saved]
    if len(states) != world_size():
        raise RuntimeError(f"the checkpoint was written by {len(states)} training process(es); resume it with as "
                           f"many, not {world_size()}")
    return states


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def agree_on_weights(model: torch.nn.Module) -> list[str]:
    """Every rank's weight digest (one per rank, rank order); RuntimeError when they differ."""
    own = weights_sha256(model)
    if world_size() == 1:
        return [own]
    digests = [None] * world_size()
    dist.all_gather_object(digests, own)
    if len(set(digests)) != 1:
        raise RuntimeError(f"the {world_size()} training processes disagree on the trained weights "
                           f"({len(set(digests))} distinct digests): data-parallel training diverged; nothing is saved")
    return digests


# --------------------------------------------------------------------------- the launcher

def launch_workers(command: list[str], nproc: int, env: dict | None = None, poll_seconds: float = 0.5) -> None:
    """Run `command` as `nproc` worker processes of one node (RANK = LOCAL_RANK = 0…nproc-1, WORLD_SIZE = nproc,
    MASTER_ADDR = 127.0.0.1, a free MASTER_PORT) and wait for all of them. When one fails the others are stopped
    and RuntimeError names the rank and its exit status. On a GPU node each rank needs a GPU of its own."""
    if nproc < 1:
        raise ValueError(f"the number of training processes must be at least 1, got {nproc}")
    if torch.cuda.is_available() and torch.cuda.device_count() < nproc:
        raise RuntimeError(f"{nproc} training processes asked for, but this node has {torch.cuda.device_count()} "
                           "GPU(s): one process per GPU")
    base = {**os.environ, **(env or {}), "WORLD_SIZE": str(nproc), "MASTER_ADDR": LOOPBACK,
            "MASTER_PORT": str(free_port()), "GLOO_SOCKET_IFNAME": LOOPBACK_INTERFACE,
            "NCCL_SOCKET_IFNAME": LOOPBACK_INTERFACE}
    log.info("launching %d training processes (rendezvous %s:%s)", nproc, LOOPBACK, base["MASTER_PORT"])
    procs = [subprocess.Popen(command, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(nproc)]
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(r, code) for r, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                raise RuntimeError(f"training process rank {failed[0][0]} exited with status {failed[0][1]}; "
                                   "the other ranks were stopped")
            if all(code == 0 for code in codes):
                return
            time.sleep(poll_seconds)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
