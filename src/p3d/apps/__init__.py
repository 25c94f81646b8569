"""End-to-end programs built on the library: the demo."""
