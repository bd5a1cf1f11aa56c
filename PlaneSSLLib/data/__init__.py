"""Cache of resampled slices + geometry index; pretext and target datasets; on-the-fly targets."""
