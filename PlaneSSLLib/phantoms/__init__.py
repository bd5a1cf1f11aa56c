"""Synthetic heart and knee cohorts written as real DICOM (+ NIfTI label maps, ``dicom.nifti``).

Main entry point: ``write_cohort(out_dir, CohortOptions("heart", subjects=4, seed=0))``. The
anatomy models (``sample_heart``, ``sample_knee``) and view planning (``plan_heart_views``,
``plan_knee_stacks``) are usable on their own, e.g. to render single images or to check a
label against the anatomy. All positions are patient LPS millimetres.
"""

from .cohort import (
    ANATOMIES,
    DEFAULT_PHASES,
    GENERATOR,
    GENERATOR_VERSION,
    LAYOUTS,
    REALISMS,
    CohortError,
    CohortOptions,
    default_workers,
    is_phantom_cohort,
    subject_name,
    write_cohort,
    write_subject,
)
from .heart import (
    ACDC_LABELS,
    HeartAnatomy,
    HeartTissue,
    HeartViews,
    acdc_labels,
    plan_heart_views,
    render_heart_cine,
    sample_heart,
)
from .knee import KneeAnatomy, KneeStack, KneeTissue, acl_torn, plan_knee_stacks, render_knee_slice, sample_knee

__all__ = [
    "ACDC_LABELS",
    "ANATOMIES",
    "DEFAULT_PHASES",
    "GENERATOR",
    "GENERATOR_VERSION",
    "LAYOUTS",
    "REALISMS",
    "CohortError",
    "CohortOptions",
    "HeartAnatomy",
    "HeartTissue",
    "HeartViews",
    "KneeAnatomy",
    "KneeStack",
    "KneeTissue",
    "acdc_labels",
    "acl_torn",
    "default_workers",
    "is_phantom_cohort",
    "plan_heart_views",
    "plan_knee_stacks",
    "render_heart_cine",
    "render_knee_slice",
    "sample_heart",
    "sample_knee",
    "subject_name",
    "write_cohort",
    "write_subject",
]
