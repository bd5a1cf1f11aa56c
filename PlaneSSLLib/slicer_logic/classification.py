"""A knee exam's ACL-tear probability in a table node, with the inputs it used.

``store_classification`` writes a ``vtkMRMLTableNode`` with two columns, ``quantity`` and
``value``: the probability (0–1), the decision at ``threshold``, the model and device, and one
row per input (view label → volume node name and hashed series keys), so the GUI can show it and
the scene records what produced it. The table is placed under the exam's study.
"""

from __future__ import annotations

from collections.abc import Mapping

from .mrml import SceneContext
from .scene import ATTR_SERIES, study_item_of

__all__ = ["store_classification", "read_classification", "ATTR_PROBABILITY"]

ATTR_PROBABILITY = "PlaneSSL.ACLTearProbability"


def store_classification(ctx: SceneContext, probability: float, inputs: Mapping[str, object],
                         model: str = "", device: str = "", threshold: float = 0.5,
                         name: str = "ACL tear classification"):
    """A table node holding the probability and what produced it (see module docstring)."""
    p = float(probability)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must lie in [0, 1], got {p}")
    rows = [("ACL tear probability", f"{p:.4f}"),
            ("decision", "tear" if p >= threshold else "no tear"),
            ("threshold", f"{threshold:g}"),
            ("model", model or "unknown"),
            ("device", device or "unknown")]
    for label, node in inputs.items():
        series = node.GetAttribute(ATTR_SERIES) or ""
        rows.append((f"input {label}", f"{node.GetName()} [{node.GetID()}] series {series}".strip()))
    table = ctx.scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    try:
        for column in ("quantity", "value"):
            table.AddColumn().SetName(column)
        for quantity, value in rows:
            r = table.AddEmptyRow()
            table.SetCellText(r, 0, quantity)
            table.SetCellText(r, 1, value)
        table.SetAttribute(ATTR_PROBABILITY, f"{p:.6f}")
        table.SetAttribute("PlaneSSL.Inputs", ",".join(n.GetID() for n in inputs.values()))
        study = 0
        for node in inputs.values():
            study = study or study_item_of(ctx, node)
        if study:
            sh = ctx.subject_hierarchy
            item = sh.GetItemByDataNode(table) or sh.CreateItem(study, table)
            sh.SetItemParent(item, study)
        return table
    except BaseException:
        ctx.scene.RemoveNode(table)
        raise


def read_classification(table) -> dict[str, str]:
    """The table's rows as ``{quantity: value}`` (what the GUI shows)."""
    return {table.GetCellText(r, 0): table.GetCellText(r, 1) for r in range(table.GetNumberOfRows())}

