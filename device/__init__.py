"""The terminal agent: runs unchanged on CPython and MicroPython."""
