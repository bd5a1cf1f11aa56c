"""One module per ``planessl`` sub-command."""
