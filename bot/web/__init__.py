"""The web interface: the coverage page, the PIC workbench (issue 13)."""
