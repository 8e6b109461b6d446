"""The score API family."""
