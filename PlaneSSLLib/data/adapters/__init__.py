"""Adapters for public data sets: each reads the set's own layout into plain records.

- ``kaggle_dsb``: Kaggle Data Science Bowl cardiac (pretraining; cine DICOM + volumes).
- ``acdc``: ACDC (ED/ES NIfTI images and labels, RV = 1, Myo = 2, LV = 3).
- ``mnms2``: M&Ms-2 (SAX and LAX NIfTI at ED/ES; labels mapped to ACDC's convention).
- ``mrnet``: MRNet (knee ``.npy`` stacks per plane, ACL labels; no geometry).

Every adapter returns plain dataclass records and raises :class:`AdapterError` naming the file
for a malformed tree. Nothing is imported here (each adapter pulls only what it needs).
"""
