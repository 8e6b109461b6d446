"""aios-serve: a self-hosted server for the AIOS API."""

import os

# torch uses OpenMP, whose spinning waits cost 3-30x on a busy 2-core machine (measured: a
# 52-token embedding 600 ms -> 20 ms), so its threads sleep while waiting unless the user chose
# otherwise. It must be set before torch loads its OpenMP runtime, hence here. llama.cpp is built
# without OpenMP (Makefile) because under this policy it decodes 2-3x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
