"""Inference-time preprocessing: what turns DICOM into network input, shared by inference and the caches.

numpy/scipy only (no torch, no caches): ``config`` (PrepareConfig: spacing, size, intensity
normalisation), ``resample`` (resampling onto the prepared grid, intensity normalisation),
``codes`` (view and anatomy codes), ``index`` (slices, stacks, anatomical slice order of a
scanned tree), ``exams`` (a knee exam's SAG/COR/AX stacks), ``labels`` (segmentation label
values and their terminology); a study's SAX stack is ``dicom.stacks.find_sax_stack``. ``data``
(caches, datasets) and ``inference`` build on these; nothing here imports either. Nothing is
imported here.
"""
