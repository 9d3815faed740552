"""The train step's multi-process path on CPUs: two processes (gloo, rendezvous on 127.0.0.1) run DeepSpeed ZeRO-2
through the same entry point as the compiled step (`components.steps.train` with num_gpus=2) against a real MLflow
server. Each worker records, through a Python audit hook (a `sitecustomize` on its PYTHONPATH, test-only), the files
it writes and the addresses it connects to, so the test can tell which rank wrote what."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from kfp.dsl import Dataset, Model

from components.steps import train
from model_core.config import REPO_ROOT, load_config
from model_core.training import distributed
from registry import tracking

AUDIT_HOOK = '''
import atexit, json, os, sys
_out, _rank = os.environ.get("RRG_TEST_AUDIT_DIR"), os.environ.get("RANK")
if _out and _rank is not None:
    _events = {"writes": set(), "connects": set()}
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def _hook(event, args):
        if event == "open" and isinstance(args[2], int) and args[2] & _WRITE:
            _events["writes"].add(os.fspath(args[0]) if not isinstance(args[0], int) else "<fd>")
        elif event == "os.rename":
            _events["writes"].add(os.fspath(args[1]))
        elif event == "socket.connect" and isinstance(args[1], tuple):
            _events["connects"].add(f"{args[1][0]}:{args[1][1]}")

    def _dump():
        with open(os.path.join(_out, f"rank{_rank}.json"), "w") as fh:
            json.dump({k: sorted(v) for k, v in _events.items()}, fh)

    sys.addaudithook(_hook)
    atexit.register(_dump)
'''

TINY = ["data.limit_studies=8", "train.batch_size=4", "train.stage0_encoder.epochs=0", "train.stage0_lm.epochs=0",
        "train.stage1.epochs=0", "train.stage2.epochs=1"]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    hook_dir, audit = root / "hook", root / "audit"
    hook_dir.mkdir()
    audit.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    cfg = load_config(REPO_ROOT / "configs" / "smoke.yaml", TINY)
    with tracking.MlflowServer(root / "mlflow") as server, pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", f"{hook_dir}:{REPO_ROOT}")
        env.setenv("RRG_TEST_AUDIT_DIR", str(audit))
        run_id = tracking.start_run(server.uri, run_name="two-processes")
        model = Model(name="model", uri=str(root / "model"), metadata={})
        train(config_json=json.dumps(cfg.to_dict()), tracking_uri=server.uri, mlflow_run_id=run_id, num_gpus=2,
              dataset=Dataset(name="dataset", uri=str(root / "dataset"), metadata={}), model=model)
        client = mlflow.MlflowClient(server.uri)
        history = {key: [m.value for m in client.get_metric_history(run_id, key)]
                   for key in client.get_run(run_id).data.metrics}
        ranks = {r: json.loads((audit / f"rank{r}.json").read_text()) for r in (0, 1)}
        yield Path(model.path), model.metadata, history, ranks, server.port


def test_both_ranks_agree_on_the_weights_rank_0_saved(two_process_run):
    from model_core.modeling.model_dir import load_model_dir

    model_dir, metadata, _, _, _ = two_process_run
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["distributed"]["world_size"] == 2 == metadata["training_processes"]
    rank0, rank1 = card["distributed"]["weights_sha256"]
    assert rank0 == rank1 == distributed.weights_sha256(load_model_dir(model_dir)[0])
    assert card["stages"] == {"stage2": {"epochs": 1, "backend": "deepspeed"}}      # a ZeRO-2 step was taken
    checkpoint = torch.load(model_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert len(checkpoint["backend"]["optimizer"]) == 2                            # each rank's ZeRO partition


def test_rank_0_alone_writes_checkpoints_the_model_and_mlflow_metrics(two_process_run):
    model_dir, _, history, ranks, mlflow_port = two_process_run
    written = {r: {Path(p).resolve() for p in ranks[r]["writes"] if Path(p).resolve().is_relative_to(model_dir)}
               for r in ranks}
    assert written[1] == set()
    assert model_dir / "checkpoints" / "last.pt" in written[0] and model_dir / "model_card.json" in written[0]
    mlflow_address = f"127.0.0.1:{mlflow_port}"
    assert mlflow_address in ranks[0]["connects"] and mlflow_address not in ranks[1]["connects"]
    assert history["stage2.train.loss"] and len(history["stage2.train.loss"]) == 1   # one value per epoch
    assert all(c.startswith("127.0.0.1:") for r in ranks for c in ranks[r]["connects"])   # loopback only


LISTENERS = """
import json, os, socket, sys, torch
from model_core.training import distributed
distributed.init_process_group()
torch.distributed.all_reduce(torch.ones(1))                  # gloo's pairs are connected by now
def target(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:                                          # the listing's own descriptor, closed already
        return ""
inodes = {link[8:-1] for link in map(target, os.listdir("/proc/self/fd")) if link.startswith("socket:[")}
listening = []
for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
    for line in open(f"/proc/net/{table}").read().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:        # LISTEN, one of this process's sockets
            raw = bytes.fromhex(fields[1].split(":")[0])
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            listening.append(socket.inet_ntop(family, words))
torch.distributed.barrier()
open(os.path.join(sys.argv[1], os.environ["RANK"]), "w").write(json.dumps(listening))
distributed.destroy_process_group()
"""


def test_the_rendezvous_and_gloo_listen_on_the_loopback_only(tmp_path):
    import sys

    distributed.launch_workers([sys.executable, "-c", LISTENERS, str(tmp_path)], nproc=2)
    listening = {r: json.loads((tmp_path / str(r)).read_text()) for r in (0, 1)}
    assert len(listening[0]) >= 2 and listening[1]                     # rank 0: the store and gloo; rank 1: gloo
    assert {address for addresses in listening.values() for address in addresses} == {"127.0.0.1"}


def test_a_failing_rank_stops_the_run_and_is_named(tmp_path):
    import sys

    code = "import os, sys, time; sys.exit(3) if os.environ['RANK'] == '1' else time.sleep(60)"
    with pytest.raises(RuntimeError, match="rank 1 exited with status 3; the other ranks were stopped"):
        distributed.launch_workers([sys.executable, "-c", code], nproc=2, poll_seconds=0.1)


def test_shards_cover_the_epoch_with_equal_counts(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    shares = []
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shares.append(distributed.shard(list(range(10))))
    assert [len(s) for s in shares] == [4, 4, 4] and set().union(*shares) == set(range(10))


def test_a_checkpoint_resumes_only_with_the_world_size_that_wrote_it():
    assert distributed.per_rank_states({"state": 1}) == [{"state": 1}]
    with pytest.raises(RuntimeError, match="written by 2 training process"):
        distributed.per_rank_states([{}, {}])


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory):
    """The production config's ZeRO-3 (every parameter sharded across the ranks) over two CPU processes, one
    stage-2 epoch, through the same train step."""
    root = tmp_path_factory.mktemp("zero3")
    cfg = load_config(REPO_ROOT / "configs" / "smoke.yaml",
                      TINY + ["train.deepspeed=configs/deepspeed/zero3_lora.json"])
    with tracking.MlflowServer(root / "mlflow") as server:
        run_id = tracking.start_run(server.uri, run_name="zero3")
        model = Model(name="model", uri=str(root / "model"), metadata={})
        train(config_json=json.dumps(cfg.to_dict()), tracking_uri=server.uri, mlflow_run_id=run_id, num_gpus=2,
              dataset=Dataset(name="dataset", uri=str(root / "dataset"), metadata={}), model=model)
    return Path(model.path)


def test_zero3_saves_whole_weights_that_both_ranks_agree_on(zero3_run):
    """ZeRO-3 leaves each rank only its shard: the saved model, the checkpoint and the weight check must be built
    from the gathered parameters (a shard saved as the model would load as empty or mismatched tensors)."""
    from model_core.modeling.model_dir import load_model_dir

    card = json.loads((zero3_run / "model_card.json").read_text())
    assert card["stages"] == {"stage2": {"epochs": 1, "backend": "deepspeed"}}
    rank0, rank1 = card["distributed"]["weights_sha256"]
    model = load_model_dir(zero3_run)[0]
    assert rank0 == rank1 == distributed.weights_sha256(model)
    checkpoint = torch.load(zero3_run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    state = model.state_dict()
    assert checkpoint["model"].keys() == state.keys()
    assert all(checkpoint["model"][k].shape == v.shape and v.numel() > 0 for k, v in state.items())
    assert all(torch.equal(checkpoint["model"][k], v) for k, v in state.items())
