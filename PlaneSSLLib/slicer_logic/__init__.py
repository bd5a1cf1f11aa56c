"""MRML-side logic of the PlaneSSL Slicer module: volumes, plane views, lines, results in the scene.

Imports ``slicer`` (MRML, from Slicer itself or from the ``slicer-core`` wheel) and ``vtk``, never
Qt/CTK, so everything here also runs and is tested outside Slicer. Patient coordinates are DICOM
LPS throughout the Lib; RAS appears only where a matrix or a point is handed to MRML
(``geometry.frames.lps_to_ras`` / ``affine_lps_to_ras``).

Modules (import them directly; this package imports nothing heavy so that ``worker`` can run
in a subprocess without MRML):

- ``mrml``: scene context (scene + application logic) and vtk/numpy matrix helpers
- ``scene``: study → one scalar volume node per view, subject hierarchy, planes of a volume node
- ``views``: one slice view per view label, aligned to the acquisition plane, linked, layout XML
- ``offscreen``: offscreen slice-view rendering (tests, benchmarks, screenshots)
- ``lines``: predicted intersection lines drawn per view, compared with the geometric lines
- ``terminology`` / ``segmentation``: label maps ↔ segmentation nodes with SNOMED CT codes
- ``classification``: a knee exam's ACL-tear probability as a table node
- ``runner`` / ``worker``: inference in a background process, scene transactions
"""
