"""PlaneSSL core library: pure Python, no Qt. Importable inside 3D Slicer and by the CLI.

Layers, from the ground up (each imports only those below it): ``geometry`` (numpy only),
``dicom`` (reading studies), ``phantoms`` (synthetic cohorts written as DICOM), then data,
models, training, inference and the MRML-side logic.
"""

__version__ = "0.1.0"
