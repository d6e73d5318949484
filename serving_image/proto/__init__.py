"""Generated Open Inference Protocol gRPC stubs (regenerate with `make proto`)."""
