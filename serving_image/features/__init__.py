"""The feature store (issue 17, docs/features.md): one Feast definition for training and serving.

``schema`` names the bundled models' features without importing Feast; ``definition`` reads a feature
service from a Feast repository and turns Feast's answer into the model's input tensor, the one
transformation both the training and the serving path use.
"""
