"""Ways to deploy aios-serve beyond one process."""
