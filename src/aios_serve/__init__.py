"""aios-serve: a self-hosted server for the AIOS API."""

import os

# torch and llama.cpp both use OpenMP. Spinning waits cost 3-30x on a busy 2-core machine
# (measured: a 52-token embedding 600 ms -> 20 ms; SmolLM2 decode 12 -> 39-52 tokens/s under
# load), so threads sleep while waiting unless the user chose otherwise. It must be set before
# either library loads its OpenMP runtime, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
