"""The fine-tuning tasks by name: what ``planessl finetune`` and ``planessl experiment transfer`` run."""

from __future__ import annotations

from .finetune import FinetuneKind
from .finetune_acl import ACL_KIND
from .finetune_seg import SEG_KIND

__all__ = ["FINETUNE_KINDS"]

#: name -> the task's :class:`~.finetune.FinetuneKind` ("seg", "acl")
FINETUNE_KINDS: dict[str, FinetuneKind] = {kind.name: kind for kind in (SEG_KIND, ACL_KIND)}
