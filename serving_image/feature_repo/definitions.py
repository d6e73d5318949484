"""Feast definitions for the bundled models: one entity, one feature view, a feature service per version.

The bundled models take the 30 measurements as they are (their scaling is inside the ONNX graph), so
there is no on-demand transformation here; a derived feature would be an on_demand_feature_view added
to the services, and both paths would compute it through Feast.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32

from serving_image.features.schema import ENTITY, FEATURE_NAMES, FEATURE_VIEW, JOIN_KEY, service_name

patient = Entity(
    name=ENTITY, join_keys=[JOIN_KEY], value_type=ValueType.INT64, description="A patient's record."
)

measurements_source = FileSource(
    name=f"{FEATURE_VIEW}_source",
    path=f"data/{FEATURE_VIEW}.parquet",
    timestamp_field="event_timestamp",
)

# Ten years: a measurement stays valid for retrieval until a newer one for the patient arrives.
tumour_measurements = FeatureView(
    name=FEATURE_VIEW,
    entities=[patient],
    ttl=timedelta(days=3650),
    schema=[Field(name=name, dtype=Float32) for name in FEATURE_NAMES],
    source=measurements_source,
    online=True,
)

tabular_classifier_v1 = FeatureService(
    name=service_name("tabular-classifier", "1"), features=[tumour_measurements]
)
tabular_classifier_v2 = FeatureService(
    name=service_name("tabular-classifier", "2"), features=[tumour_measurements]
)
tabular_classifier_int8_v1 = FeatureService(
    name=service_name("tabular-classifier-int8", "1"), features=[tumour_measurements]
)
