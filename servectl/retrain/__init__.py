"""`servectl retrain`: train a candidate from labelled data, gate it against the serving version, publish it.

data (read and validate the labelled CSV) -> evaluate (metrics and the refusal decision, pure) -> state
(idempotency per trigger key and the rate limit) -> run (the whole retrain) -> command (the click command).
The shared contract is docs/drift.md's "Retraining" section.
"""
