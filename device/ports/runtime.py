# Which runtime we are on; ports are chosen once from this at start-up.
import sys

NAME = "micropython" if sys.implementation.name == "micropython" else "cpython"
MICROPYTHON = NAME == "micropython"
