"""The Pulumi program of model-serving: region-pinned stacks, one per jurisdiction."""
