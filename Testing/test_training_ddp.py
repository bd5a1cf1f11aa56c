"""Data-parallel pretraining through torchrun on the gloo backend (CPU), one node and two nodes."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from training_helpers import REPO, cli_env, write_config  # noqa: E402

from PlaneSSLLib.inference.weights import load_exported  # noqa: E402
from PlaneSSLLib.training.checkpoint import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _pretrain_args(config, out, *extra):
    return ["-m", "training_cli", "pretrain", "--config", str(config), "--out", str(out), *extra]


def _popen(args):
    return subprocess.Popen(args, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=180):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"timed out:\n{err[-3000:]}")
    assert proc.returncode == 0, f"rc {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    return err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    """Same global batch of 4 (2 per rank): the weights agree up to float summation order.

    Augmentation off (its random draws are per rank). Instance norm instead of BatchNorm: on
    the CPU, DDP has no SyncBatchNorm, so BatchNorm would normalise each rank's half-batch with
    its own statistics (a different model, by design). With per-sample normalisation the two runs
    compute the same function and, because the loss is normalised by the global valid count, the
    same gradient; what is left is the order of floating-point sums in the gradient all-reduce
    (observed: weights within 6e-8 after 4 steps).
    """
    config = write_config(
        tmp_path / "c.yaml",
        model={"norm": "instance"},
        data={"synthetic_subjects": 10, "val_fraction": 0.2, "augment": False},
        optim={"epochs": 2, "batch_size": 4},
        runtime={"seed": 5},
    )
    ddp = _popen([*TORCHRUN, "--standalone", "--nproc_per_node=2", *_pretrain_args(config, tmp_path / "ddp")])
    single = _popen([sys.executable, *_pretrain_args(config, tmp_path / "single")])
    err = _finish(ddp)
    _finish(single)
    assert "on 2 processes" in err
    a = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.safetensors")
    b = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.safetensors")
    assert a.train_state["world_size"] == 2 and a.train_state["global_step"] == b.train_state["global_step"] == 4
    wa, wb = a.model_state(), b.model_state()
    worst = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].is_floating_point())
    assert worst < 1e-5, f"largest weight difference {worst:g}"  # observed ~6e-8
    ra, rb = a.train_state["history"], b.train_state["history"]
    for row_a, row_b in zip(ra, rb, strict=True):
        assert row_a["train_loss"] == pytest.approx(row_b["train_loss"], rel=1e-5)
        assert row_a["val_loss"] == pytest.approx(row_b["val_loss"], rel=1e-5)
    # only rank 0 wrote: one event of each kind
    assert len(list((tmp_path / "ddp").glob("checkpoints/*.safetensors"))) == 2


def test_two_nodes_on_localhost(tmp_path):
    """``--nnodes=2`` with a c10d rendezvous, one process per node (BatchNorm, per-rank statistics)."""
    config = write_config(tmp_path / "c.yaml", optim={"epochs": 1, "batch_size": 2})
    port = _free_port()
    out = tmp_path / "run"
    nodes = [
        _popen([*TORCHRUN, "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1", "--rdzv_backend=c10d",
                f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=planessl-test", *_pretrain_args(config, out)])
        for rank in range(2)
    ]
    for node in nodes:
        _finish(node)
    state = load_checkpoint(out / "checkpoints" / "last.safetensors").train_state
    assert state["world_size"] == 2 and state["complete"] and state["global_step"] == 3
    model, manifest = load_exported(out / "model")
    assert manifest["training_config"]["optim"]["batch_size"] == 2
