"""kernel-hil: boot real guests, deploy kernel drivers, drive workloads, witness every byte.

The library is usable without pytest; :mod:`hil.pytest_plugin` is a thin layer on top.
"""

__version__ = "0.1.0"
