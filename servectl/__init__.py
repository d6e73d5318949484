"""servectl: the one command line that drives the parts of model-serving."""
