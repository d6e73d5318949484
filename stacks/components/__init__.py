"""Components: one noun each, built from typed Args, never reading config."""
