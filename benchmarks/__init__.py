"""Scripts that print figures and ratios measured in one run (``make bench``)."""
