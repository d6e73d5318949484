"""Functions the stacks deploy as AWS Lambda code (each module is one function's whole code)."""
