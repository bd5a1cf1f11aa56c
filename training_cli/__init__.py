"""The ``planessl`` command line: argument parsing and progress only; the work is in PlaneSSLLib."""
