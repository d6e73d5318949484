"""Names shared by the feature repository, the model build and the server; importing this is free.

The feature columns are scikit-learn's breast-cancer feature names, lower-cased with spaces as
underscores, in the bundled models' column order (tests check both against scikit-learn).
"""

PROJECT = "model_serving"
ENTITY = "patient"
JOIN_KEY = "patient_id"
FEATURE_VIEW = "tumour_measurements"
SERVICE_KEY = "feature_service"
"""ONNX ``metadata_props`` key naming the feature service a model version was trained from."""
SERVICE_VERSION_KEY = "feature_service_version"
"""ONNX ``metadata_props`` key holding :func:`serving_image.features.definition.service_version`."""

FEATURE_NAMES: tuple[str, ...] = tuple(
    f"{group}_{measure}" if group != "error" else f"{measure}_error"
    for group in ("mean", "error", "worst")
    for measure in (
        "radius",
        "texture",
        "perimeter",
        "area",
        "smoothness",
        "compactness",
        "concavity",
        "concave_points",
        "symmetry",
        "fractal_dimension",
    )
)


def service_name(model: str, version: str) -> str:
    """The feature service of one model version: ``tabular-classifier`` v2 -> ``tabular_classifier_v2``."""
    return f"{model.replace('-', '_')}_v{version}"
