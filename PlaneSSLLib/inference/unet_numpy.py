"""A PlaneSSLNet heatmap decoder run in numpy (no torch): the fast CPU path of ``predict seg`` and ``plan``.

``import torch`` alone takes longer than everything else a one-study ``planessl predict seg`` does on
a CPU, so the segmentation network is also run here, from the same exported files: the weights are
read with ``safetensors.numpy`` and checked as ``inference.weights.load_validated`` checks them (the
manifest validated, the checksums, every tensor's name, shape and dtype against the architecture,
no NaN or inf), then the forward pass of ``models.unet.PlaneSSLNet`` (encoder + decoder) is computed
in float32. A network with a location head is refused unless the caller needs only the heatmaps
(``heatmaps_only=True``, view planning: ``inference.plan_views``): its location-head tensors are then
checked like the others (names, shapes, dtypes, finite) but never run. Segmentation networks have none.

The forward pass:

- 3×3 convolutions (padding 1) as one matrix product over the unfolded input;
  eval-mode BatchNorm folded into the convolution before it; InstanceNorm (affine) from each
  image's own statistics; ReLU; 2×2 max pooling;
- 2×2 stride-2 transposed convolutions (``Decoder.ups``) as one matrix product per level, the
  up-sampled map concatenated before the skip connection as ``Decoder.forward`` does;
- the 1×1 head with its bias.

``Testing/test_unet_numpy.py`` checks the logits against the torch network (every norm, with and
without a location head; the sample line network's heatmaps) and the expected tensor shapes against
``PlaneSSLNet.state_dict()``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..models.configs import UNetConfig
from .manifest import ValidatedManifest, WeightsError
from .weights import MANIFEST_FILE, WEIGHTS_FILE, read_validated

__all__ = ["NumpyUNet", "load_numpy_unet", "unet_state_shapes"]

_EPS = 1e-5  # torch's BatchNorm2d / InstanceNorm2d default


def _norm_shapes(prefix: str, kind: str, channels: int) -> dict[str, tuple[tuple[int, ...], str]]:
    if kind == "batch":
        out = {f"{prefix}.{k}": ((channels,), "float32") for k in ("weight", "bias", "running_mean", "running_var")}
        out[f"{prefix}.num_batches_tracked"] = ((), "int64")
        return out
    if kind == "instance":
        return {f"{prefix}.{k}": ((channels,), "float32") for k in ("weight", "bias")}
    return {}


def _double_conv_shapes(prefix: str, c_in: int, c_out: int, norm: str) -> dict[str, tuple[tuple[int, ...], str]]:
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for conv, bn, c in ((0, 1, c_in), (3, 4, c_out)):
        out[f"{prefix}.{conv}.weight"] = ((c_out, c, 3, 3), "float32")
        if norm == "none":
            out[f"{prefix}.{conv}.bias"] = ((c_out,), "float32")
        out.update(_norm_shapes(f"{prefix}.{bn}", norm, c_out))
    return out


def unet_state_shapes(config: UNetConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, dtype) of every tensor of ``PlaneSSLNet(config).state_dict()`` (the location head's
    ``Linear → ReLU → Linear`` MLP included when the config has one)."""
    f = config.filters
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for i in range(config.levels):
        out.update(_double_conv_shapes(f"encoder.blocks.{i}", config.in_channels if i == 0 else f[i - 1], f[i],
                                       config.norm))
    for j, i in enumerate(range(config.levels - 1, 0, -1)):
        out[f"decoder.ups.{j}.weight"] = ((f[i], f[i - 1], 2, 2), "float32")
        out[f"decoder.ups.{j}.bias"] = ((f[i - 1],), "float32")
        out.update(_double_conv_shapes(f"decoder.blocks.{j}", 2 * f[i - 1], f[i - 1], config.norm))
    out["decoder.head.weight"] = ((config.head_outputs, f[0], 1, 1), "float32")
    out["decoder.head.bias"] = ((config.head_outputs,), "float32")
    if config.location_head:
        hidden = config.location_hidden
        out["location.mlp.0.weight"] = ((hidden, config.location_features), "float32")
        out["location.mlp.0.bias"] = ((hidden,), "float32")
        out["location.mlp.2.weight"] = ((1, hidden), "float32")
        out["location.mlp.2.bias"] = ((1,), "float32")
    return out


class _Conv3:
    """A 3×3 convolution (padding 1) with its BatchNorm folded in, or followed by an InstanceNorm."""

    def __init__(self, state: dict[str, np.ndarray], conv: str, norm: str, kind: str) -> None:
        w = state[f"{conv}.weight"].astype(np.float32)  # (C_out, C_in, 3, 3)
        c_out = w.shape[0]
        bias = state[f"{conv}.bias"].astype(np.float32) if kind == "none" else np.zeros(c_out, np.float32)
        self.instance: tuple[np.ndarray, np.ndarray] | None = None
        if kind == "batch":
            scale = state[f"{norm}.weight"] / np.sqrt(state[f"{norm}.running_var"] + _EPS)
            w = w * scale[:, None, None, None]
            bias = state[f"{norm}.bias"] - state[f"{norm}.running_mean"] * scale
        elif kind == "instance":
            self.instance = (state[f"{norm}.weight"].astype(np.float32)[:, None, None, None],
                             state[f"{norm}.bias"].astype(np.float32)[:, None, None, None])
        self.w = np.ascontiguousarray(w.reshape(c_out, -1), dtype=np.float32)  # (C_out, C_in*9): (c, dy, dx)
        self.b = bias.astype(np.float32)[:, None]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x``: (C_in, N, H, W) → (C_out, N, H, W), ReLU applied."""
        c, n, h, w = x.shape
        padded = np.zeros((c, n, h + 2, w + 2), np.float32)
        padded[:, :, 1:-1, 1:-1] = x
        cols = np.empty((c, 9, n, h, w), np.float32)
        for k in range(9):  # 9 shifted copies; rows of W contiguous floats each
            dy, dx = divmod(k, 3)
            cols[:, k] = padded[:, :, dy:dy + h, dx:dx + w]
        y = self.w @ cols.reshape(c * 9, n * h * w)
        y += self.b
        y = y.reshape(-1, n, h, w)
        if self.instance is not None:
            mean = y.mean(axis=(2, 3), keepdims=True)
            var = y.var(axis=(2, 3), keepdims=True)
            y = (y - mean) / np.sqrt(var + _EPS) * self.instance[0] + self.instance[1]
        return np.maximum(y, 0, out=y)


class NumpyUNet:
    """``PlaneSSLNet`` (encoder + decoder) in numpy; ``logits(images)`` = the network's ``"lines"`` output.

    Feature maps are held channels first, then images: ``(C, N, H, W)`` (every convolution one
    matrix product with the weights on the left). ``heatmaps_only=True`` accepts a network with a
    location head, which is not run (``logits`` is all such a caller needs)."""

    def __init__(self, config: UNetConfig, state: dict[str, np.ndarray], heatmaps_only: bool = False) -> None:
        if config.line_channels < 1 or config.location_head and not heatmaps_only:
            raise ValueError("the numpy network runs a decoder without a location head (a segmentation network), "
                             "or only the heatmaps of one with a location head (heatmaps_only=True)")
        self.config = config
        norm = config.norm

        def block(prefix: str) -> tuple[_Conv3, _Conv3]:
            return (_Conv3(state, f"{prefix}.0", f"{prefix}.1", norm),
                    _Conv3(state, f"{prefix}.3", f"{prefix}.4", norm))

        self.encoder = [block(f"encoder.blocks.{i}") for i in range(config.levels)]
        self.decoder = [block(f"decoder.blocks.{j}") for j in range(config.levels - 1)]
        self.ups = []
        for j in range(config.levels - 1):
            w = state[f"decoder.ups.{j}.weight"].astype(np.float32)  # (C_in, C_out, 2, 2)
            c_in, c_out = w.shape[:2]
            # rows (C_out, a, b), columns C_in
            self.ups.append((np.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(c_out * 4, c_in)), c_out,
                             state[f"decoder.ups.{j}.bias"].astype(np.float32)[:, None, None, None]))
        head = state["decoder.head.weight"].astype(np.float32)
        self.head_w = np.ascontiguousarray(head.reshape(head.shape[0], -1))
        self.head_b = state["decoder.head.bias"].astype(np.float32)[:, None]

    def logits(self, images: np.ndarray, heads: np.ndarray | None = None) -> np.ndarray:
        """Class logits ``(N, C, H, W)`` float32 of images ``(N, in_channels, H, W)``; ``heads`` ``(N,)``: each
        image's head (``UNetConfig.head_index`` of its view), required when the config has ``head_views``."""
        x = np.ascontiguousarray(np.asarray(images, dtype=np.float32).transpose(1, 0, 2, 3))
        m = self.config.size_multiple
        if x.shape[2] % m or x.shape[3] % m:
            raise ValueError(f"input size {tuple(x.shape[2:])} must be divisible by {m}")
        features = []
        for i, (a, b) in enumerate(self.encoder):
            if i:
                c, n, h, w = x.shape
                x = x.reshape(c, n, h // 2, 2, w // 2, 2).max(axis=(3, 5))
            x = b(a(x))
            features.append(x)
        x = features[-1]
        for (a, b), (w, c_out, bias), skip in zip(self.decoder, self.ups, reversed(features[:-1]), strict=True):
            c, n, h, wd = x.shape
            up = (w @ x.reshape(c, -1)).reshape(c_out, 2, 2, n, h, wd).transpose(0, 3, 4, 1, 5, 2)
            up = up.reshape(c_out, n, 2 * h, 2 * wd) + bias
            x = b(a(np.concatenate([up, skip], axis=0)))
        c, n, h, w = x.shape
        out = (self.head_w @ x.reshape(c, -1) + self.head_b).reshape(-1, n, h, w).transpose(1, 0, 2, 3)
        if self.config.head_views:
            if heads is None or np.shape(heads) != (n,):
                raise ValueError(f"a network with heatmap heads per view ({', '.join(self.config.head_views)}) "
                                 "needs each image's head index")
            k = self.config.line_channels
            out = out.reshape(n, len(self.config.head_views), k, h, w)[np.arange(n), np.asarray(heads)]
        return np.ascontiguousarray(out)


def load_numpy_unet(path: str | Path, expect_task: str | Sequence[str] | None = None, heatmaps_only: bool = False
                    ) -> tuple[NumpyUNet, ValidatedManifest]:
    """``(NumpyUNet, validated manifest)`` from a weights directory or ``.zip`` (see module docstring).

    The same checks as ``inference.weights.load_validated``; WeightsError names the file. Only a
    ``PlaneSSLNet`` with a decoder runs here; one with a location head only with ``heatmaps_only=True``
    (its location-head tensors checked as all others, never run).
    """
    from safetensors.numpy import load as safetensors_load

    weights, validated, where = read_validated(path, expect_task)
    config = validated.config
    if validated.architecture.name != "PlaneSSLNet" or config.line_channels < 1:
        raise WeightsError(f"{where}: {MANIFEST_FILE}: the numpy network runs a PlaneSSLNet with a heatmap decoder")
    if config.location_head and not heatmaps_only:
        raise WeightsError(f"{where}: {MANIFEST_FILE}: the numpy network runs a PlaneSSLNet decoder without a "
                           "location head (a network with one is loaded here only for its heatmaps)")
    try:
        state = safetensors_load(weights)
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{where}: {WEIGHTS_FILE} is not a readable safetensors file ({exc})") from exc
    wanted = unet_state_shapes(config)
    missing, unexpected = sorted(set(wanted) - set(state)), sorted(set(state) - set(wanted))
    if missing or unexpected:
        raise WeightsError(
            f"{where}: {WEIGHTS_FILE} does not match architecture.config "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    wrong = [f"{k} {tuple(state[k].shape)} {state[k].dtype} (expected {wanted[k][0]} {wanted[k][1]})"
             for k in sorted(state) if tuple(state[k].shape) != wanted[k][0] or str(state[k].dtype) != wanted[k][1]]
    if wrong:
        raise WeightsError(f"{where}: {WEIGHTS_FILE} does not match architecture.config (tensor {wrong[0]}"
                           f"{f' and {len(wrong) - 1} more' if len(wrong) > 1 else ''})")
    for name in sorted(state):
        if state[name].dtype.kind == "f" and not np.isfinite(state[name]).all():
            raise WeightsError(f"{where}: {WEIGHTS_FILE}: tensor {name!r} holds non-finite values (NaN or inf); "
                               "damaged weights are not used")
    validated.manifest.setdefault("model_id", hashlib.sha256(weights).hexdigest()[:16])
    return NumpyUNet(config, state, heatmaps_only), validated
