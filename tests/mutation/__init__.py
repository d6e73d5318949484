"""Mutation testing of the core modules: `make mutation` runs `python -m tests.mutation.run`."""
