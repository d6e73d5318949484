"""`servectl deploy`: the platform layer through the Automation API and the real Pulumi engine."""
