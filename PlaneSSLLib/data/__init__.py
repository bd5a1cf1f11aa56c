"""Cache of resampled slices + geometry index; pretext and target datasets; on-the-fly targets.

numpy-only modules (usable without torch): ``config`` (PrepareConfig), ``resample``, ``index``
(slices, stacks, anatomical locations), ``cache`` (the slice cache of pretraining and
segmentation: open_cache, layout, writer), ``splits`` (subject and exam splits), ``pairs``
(partner views, line coefficients), ``prepare`` (prepare_cache), ``codes``. torch modules:
``datasets`` (PretextDataset), ``sampler`` (SubjectEpochSampler), ``augment``
(augment_batch), ``targets`` (heatmaps). Nothing is imported here, so importing the package
does not pull torch.
"""
