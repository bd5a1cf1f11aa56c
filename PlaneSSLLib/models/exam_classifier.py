"""Exam-level classifier: one shared PlaneSSL encoder over the slices of every plane, then fusion.

Plain torch (no MONAI). For an exam with stacks ``{view: (S_v, H, W)}`` (knee: SAG, COR, AX):

1. every slice of every view goes through the **same** encoder (``models.unet.Encoder``, the
   pretrained PlaneSSLNet encoder when transferred); its bottleneck is pooled over the pixels
   into one feature vector of ``C = encoder.filters[-1]`` numbers per slice: the mean
   (``spatial_pooling="mean"``, default) or the maximum (``"max"``: a finding that fills a few
   bottleneck cells is not averaged away by the rest of the image);
2. **pooling over slices** turns a view's ``(S_v, C)`` features into one ``C`` vector:

   * ``"max"`` (default; MRNet's choice): the element-wise maximum over the slices — a tear
     visible on a few slices is not diluted by the many normal ones, no extra parameters;
   * ``"attention"``: gated attention-based MIL pooling (Ilse, Tomczak, Welling 2018):
     ``a_s = softmax_s(w · (tanh(V h_s) ⊙ σ(U h_s)))``, pooled ``Σ a_s h_s``; learns which
     slices matter, and its weights can be shown per slice. One attention module per view.

   Slices are padded to the longest stack of a batch; ``masks[view]`` (B, S) marks real slices
   and padded ones never contribute (−inf before the max, zero weight in the softmax);
3. **fusion**: the per-view vectors are concatenated in ``config.views`` order → MLP
   (``hidden`` units, ReLU, dropout) → **one logit** (tear probability = sigmoid).

Every configured view is required (an exam lacking one is refused by the data layer).
"""

from __future__ import annotations

import torch
from torch import nn

from .configs import POOLINGS, SPATIAL_POOLINGS, ExamClassifierConfig
from .unet import Encoder

__all__ = ["POOLINGS", "SPATIAL_POOLINGS", "ExamClassifierConfig", "ExamClassifier", "SlicePooling"]


class SlicePooling(nn.Module):
    """``(B, S, C)`` slice features + ``(B, S)`` mask → ``(B, C)`` (module docstring, step 2)."""

    def __init__(self, kind: str, channels: int, hidden: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "attention":
            self.v = nn.Linear(channels, hidden)
            self.u = nn.Linear(channels, hidden)
            self.w = nn.Linear(hidden, 1)

    def weights(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(B, S)`` (sum 1 over real slices); attention pooling only."""
        scores = self.w(torch.tanh(self.v(features)) * torch.sigmoid(self.u(features))).squeeze(-1)
        scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return features.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        return (self.weights(features, mask).unsqueeze(-1) * features).sum(dim=1)


class ExamClassifier(nn.Module):
    """Shared encoder → per-slice features → pooling per view → concat + MLP → 1 logit."""

    def __init__(self, config: ExamClassifierConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config.encoder)
        c = config.feature_channels
        self.pooling = nn.ModuleDict({v: SlicePooling(config.pooling, c, config.attention_hidden)
                                      for v in config.views})
        self.head = nn.Sequential(
            nn.Linear(c * len(config.views), config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, 1),
        )

    def slice_features(self, slices: torch.Tensor) -> torch.Tensor:
        """``(N, H, W)`` or ``(N, 1, H, W)`` slices → ``(N, C)`` bottleneck features pooled over the pixels."""
        if slices.dim() == 3:
            slices = slices.unsqueeze(1)
        m = self.config.encoder.size_multiple
        if slices.shape[-1] % m or slices.shape[-2] % m:
            raise ValueError(f"slice size {tuple(slices.shape[-2:])} must be divisible by {m}")
        bottleneck = self.encoder(slices)[-1]
        if self.config.spatial_pooling == "max":
            return bottleneck.amax(dim=(2, 3))
        return bottleneck.mean(dim=(2, 3))

    def view_features(self, stacks: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None = None
                      ) -> dict[str, torch.Tensor]:
        """Per view ``(B, C)``: the encoder runs once over all real slices of all views."""
        missing = [v for v in self.config.views if v not in stacks]
        if missing:
            raise ValueError(f"missing view(s) {', '.join(missing)} (the model needs {', '.join(self.config.views)})")
        shapes, flat, keep = {}, [], []
        for v in self.config.views:
            x = stacks[v]
            if x.dim() != 4:
                raise ValueError(f"view {v}: expected (B, S, H, W), got shape {tuple(x.shape)}")
            b, s = x.shape[:2]
            mask = masks[v].bool() if masks is not None and v in masks else torch.ones(b, s, dtype=torch.bool,
                                                                                       device=x.device)
            if not mask.any(dim=1).all():
                raise ValueError(f"view {v}: an exam has no slice")
            shapes[v] = (b, s, mask)
            flat.append(x.reshape(b * s, *x.shape[2:]))
            keep.append(mask.reshape(-1))
        images, real = torch.cat(flat), torch.cat(keep)
        feats = self.slice_features(images[real])  # padded slices never reach the encoder (BatchNorm)
        full = feats.new_zeros(images.shape[0], feats.shape[1])
        full[real] = feats
        out, start = {}, 0
        for v in self.config.views:
            b, s, mask = shapes[v]
            per_slice = full[start:start + b * s].reshape(b, s, -1)
            start += b * s
            out[v] = self.pooling[v](per_slice, mask)
        return out

    def forward(self, stacks: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``stacks[view]`` (B, S_v, H, W), ``masks[view]`` (B, S_v) bool (default all real) → (B,) logits."""
        pooled = self.view_features(stacks, masks)
        return self.head(torch.cat([pooled[v] for v in self.config.views], dim=1)).squeeze(1)

    def load_encoder_state(self, state: dict[str, torch.Tensor]) -> None:
        """Encoder weights (keys relative to the encoder, e.g. from ``PlaneSSLNet.encoder``); strict."""
        self.encoder.load_state_dict(state, strict=True)
