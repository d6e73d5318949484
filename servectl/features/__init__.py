"""`servectl features`: drive the feature repository (docs/features.md).

apply (the definitions into a registry, sources moved under an offline root) and materialize (Feast's
incremental materialization, its intervals and its errors as one line) -> command
(the click group). The repository's definitions and data live in serving_image.features.
"""
