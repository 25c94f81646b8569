"""Thin argument wiring for each ``p3d`` sub-command (see ``p3d.cli.COMMANDS``)."""
