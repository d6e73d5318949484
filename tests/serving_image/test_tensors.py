"""The tensor checks every transport shares, called in-process: shapes and their limits, JSON data
decoded strictly per V2 datatype, and inputs matched against what a model declares.

Every refusal is an ``InvalidInput`` (400) or ``PayloadTooLarge`` (413) whose message the server sends
back as ``{"error": ...}``, so the messages are compared whole: they name the input and the problem.
"""

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from tritonclient.utils import np_to_triton_dtype, triton_to_np_dtype

from serving_image.datatypes import V2_TO_NUMPY
from serving_image.errors import InvalidInput, PayloadTooLarge, ServingError
from serving_image.runtime import TensorSpec
from serving_image.tensors import (
    DEFAULT_LIMITS,
    InferRequest,
    InferResponse,
    InputTensor,
    OutputTensor,
    RequestedOutput,
    TensorLimits,
    array_from_list,
    check_against_model,
    check_against_spec,
    check_shape,
    element_count,
    reshape,
)

MAX = 4 * 1024 * 1024  # the default element limit, written out: a change to it must be deliberate


def refusal(call: Callable[..., object], *args: object) -> ServingError:
    """The ServingError ``call(*args)`` raises; fails the test when it returns."""
    with pytest.raises(ServingError) as caught:
        call(*args)
    return caught.value


def bad_request(call: Callable[..., object], *args: object) -> str:
    """The message of the 400 ``call(*args)`` raises."""
    error = refusal(call, *args)
    assert type(error) is InvalidInput, f"expected a 400, got {type(error).__name__}: {error.message}"
    assert error.status == 400 and str(error) == error.message
    return error.message


# ---------------------------------------------------------------------------------------------------
# The data classes: their defaults are part of what transports rely on.


def test_default_limits_are_rank_16_and_four_mebi_elements() -> None:
    assert (TensorLimits().max_rank, TensorLimits().max_elements) == (16, MAX), TensorLimits()
    assert TensorLimits(max_rank=16, max_elements=MAX) == DEFAULT_LIMITS, DEFAULT_LIMITS


def test_request_and_response_defaults() -> None:
    request = InferRequest(model="m", version=None, inputs=[])
    assert (request.id, request.outputs, request.binary_outputs) == (None, None, False), request
    assert RequestedOutput("y").binary is False, "an output is JSON unless asked for as binary"
    assert OutputTensor("y", "FP32", np.zeros(1)).binary is False, "an output is JSON unless asked for"
    first, second = InferResponse("m", "1", []), InferResponse("m", "1", [])
    assert first.id is None and first.parameters == {}, first
    first.parameters["k"] = 1
    assert second.parameters == {}, "each response has its own parameters"


# ---------------------------------------------------------------------------------------------------
# check_shape: type, rank, dimensions and element count, at and around each bound.


@pytest.mark.parametrize(
    ("shape", "limits", "expected"),
    [
        ([], DEFAULT_LIMITS, ()),
        ((2, 3), DEFAULT_LIMITS, (2, 3)),
        ([0], DEFAULT_LIMITS, (0,)),
        ([1] * 16, DEFAULT_LIMITS, (1,) * 16),  # the default rank limit, exactly
        ([MAX], DEFAULT_LIMITS, (MAX,)),  # the default element limit, exactly
        ([1024, 4096], DEFAULT_LIMITS, (1024, 4096)),
        ([MAX, 1], DEFAULT_LIMITS, (MAX, 1)),
        ([MAX, 0], DEFAULT_LIMITS, (MAX, 0)),  # a zero dimension counts as one, not as two
        ([0, MAX], DEFAULT_LIMITS, (0, MAX)),
        ([2, 3], TensorLimits(max_rank=2, max_elements=6), (2, 3)),
        ([1, 1, 1], TensorLimits(max_rank=3, max_elements=1), (1, 1, 1)),
    ],
)
def test_shapes_within_the_limits_come_back_as_tuples(
    shape: list[int], limits: TensorLimits, expected: tuple[int, ...]
) -> None:
    got = check_shape(shape, "x", limits)
    assert got == expected and type(got) is tuple, f"{shape} under {limits} gave {got!r}"


def test_check_shape_uses_the_default_limits() -> None:
    assert check_shape([1] * 16, "x") == (1,) * 16, "16 dimensions are allowed by default"
    assert check_shape([MAX], "x") == (MAX,), "4 Mi elements are allowed by default"
    assert "the limit is 16" in bad_request(check_shape, [1] * 17, "x")
    assert type(refusal(check_shape, [MAX + 1], "x")) is PayloadTooLarge


@pytest.mark.parametrize(
    ("shape", "shown"),
    [
        (None, "None"),
        ("2,3", "'2,3'"),
        (3, "3"),
        ({"a": 1}, "{'a': 1}"),
    ],
)
def test_a_shape_that_is_not_a_list_is_named(shape: object, shown: str) -> None:
    message = bad_request(check_shape, shape, "x")
    assert message == f"input 'x': shape must be a list of non-negative integers, got {shown}", message


@pytest.mark.parametrize(
    "shape",
    [[-1], [2, -1], [True], [2, False], [1.0], [2, "3"], [None], [[2]]],
)
def test_a_dimension_that_is_not_a_non_negative_integer_is_named(shape: list[object]) -> None:
    message = bad_request(check_shape, shape, "img")
    assert message == f"input 'img': shape must be a list of non-negative integers, got {shape!r}", message


@pytest.mark.parametrize(
    ("rank", "limit"),
    [(17, 16), (3, 2), (100, 16)],
)
def test_one_dimension_too_many_is_refused_naming_both_ranks(rank: int, limit: int) -> None:
    limits = TensorLimits(max_rank=limit, max_elements=MAX)
    message = bad_request(check_shape, [1] * rank, "x", limits)
    assert message == f"input 'x': shape has {rank} dimensions, the limit is {limit}", message


def test_the_rank_is_checked_before_any_dimension() -> None:
    message = bad_request(check_shape, [-1] * 17, "x")
    assert message == "input 'x': shape has 17 dimensions, the limit is 16", message


@pytest.mark.parametrize(
    ("shape", "limit"),
    [
        ([MAX + 1], MAX),
        ([2, MAX // 2 + 1], MAX),
        ([MAX, 2], MAX),
        ([0, MAX, MAX], MAX),  # holds nothing, but numpy would overflow on it
        ([7], 6),
        ([2, 4], 7),
        ([10**30], 6),
    ],
)
def test_one_element_too_many_is_a_413_naming_the_shape(shape: list[int], limit: int) -> None:
    error = refusal(check_shape, shape, "x", TensorLimits(max_rank=16, max_elements=limit))
    assert type(error) is PayloadTooLarge and error.status == 413, f"{type(error).__name__}: {error}"
    assert error.message == f"input 'x': shape {shape!r} exceeds the limit of {limit} elements", error.message


def test_a_huge_rank_is_refused_by_the_element_count_before_numpy_sees_it() -> None:
    shape = [2] * 64
    message = refusal(check_shape, shape, "x", TensorLimits(max_rank=64, max_elements=MAX)).message
    assert message.startswith("input 'x': shape [2, 2, 2"), message


@pytest.mark.parametrize("length", [119, 120])
def test_shapes_are_shown_whole_up_to_120_characters(length: int) -> None:
    shape = shape_with_repr_length(length)
    message = bad_request(check_shape, shape, "x", TensorLimits(max_rank=100, max_elements=MAX))
    assert message.endswith(f"got {shape!r}"), message


@pytest.mark.parametrize("length", [121, 300])
def test_longer_shapes_are_clipped_to_120_characters(length: int) -> None:
    shape = shape_with_repr_length(length)
    message = bad_request(check_shape, shape, "x", TensorLimits(max_rank=100, max_elements=MAX))
    assert message.endswith(f"got {repr(shape)[:120]}..."), message


def shape_with_repr_length(length: int) -> list[int]:
    """An invalid shape (its first dimension is -1) whose repr is exactly ``length`` characters."""
    ones, extra_digits = divmod(length - len("[-1]"), len(", 1"))
    shape = [-1] + [1] * ones
    shape[-1] = 10**extra_digits
    assert len(repr(shape)) == length, (length, shape)
    return shape


# ---------------------------------------------------------------------------------------------------
# element_count


@pytest.mark.parametrize(
    ("shape", "count"),
    [((), 1), ((0,), 0), ((5,), 5), ((2, 3, 4), 24), ((3, 0, 7), 0), ((1,) * 40, 1)],
)
def test_element_count_is_the_product_of_the_dimensions(shape: tuple[int, ...], count: int) -> None:
    assert element_count(shape) == count == math.prod(shape), shape


# ---------------------------------------------------------------------------------------------------
# array_from_list: every datatype, nesting, counts, types and ranges.

ROUND_TRIPS = [
    ("BOOL", [True, False, True], (3,)),
    ("UINT8", [0, 1, 255], (3,)),
    ("UINT16", [0, 65535], (2,)),
    ("UINT32", [0, 2**32 - 1], (2,)),
    ("UINT64", [0, 2**64 - 1], (2,)),
    ("INT8", [-128, 0, 127], (3,)),
    ("INT16", [-(2**15), 2**15 - 1], (2,)),
    ("INT32", [-(2**31), 2**31 - 1], (2,)),
    ("INT64", [-(2**63), 2**63 - 1], (2,)),
    ("FP16", [0.5, -2.0, 65504.0], (3,)),
    ("FP32", [1.5, -0.25, 3], (3,)),  # an integer is a number for FP
    ("FP64", [1e300, -1e-300, 0.1], (3,)),
    ("BYTES", ["a", "", "é"], (3,)),
]


@pytest.mark.parametrize(("datatype", "data", "shape"), ROUND_TRIPS)
def test_every_datatype_decodes_to_its_numpy_dtype_and_values(
    datatype: str, data: list[object], shape: tuple[int, ...]
) -> None:
    array = array_from_list("x", datatype, shape, data)
    expected = np.dtype(triton_to_np_dtype(datatype))  # tritonclient's own mapping is the reference
    assert array.dtype == expected, f"{datatype} decoded as {array.dtype}, tritonclient says {expected}"
    if datatype != "BYTES":
        assert np_to_triton_dtype(array.dtype) == datatype, array.dtype
    assert array.shape == shape, array.shape
    assert array.tolist() == data, f"{datatype}: {array.tolist()} != {data}"


def test_every_v2_datatype_has_a_round_trip_case() -> None:
    assert {case[0] for case in ROUND_TRIPS} == set(V2_TO_NUMPY), "a datatype is missing from ROUND_TRIPS"


@pytest.mark.parametrize(
    ("shape", "data"),
    [
        ((2, 3), [1, 2, 3, 4, 5, 6]),  # flat, row-major
        ((2, 3), [[1, 2, 3], [4, 5, 6]]),  # nested as deep as the rank
        ((3, 2), [[1, 2], [3, 4], [5, 6]]),
        ((1, 2, 3), [[[1, 2, 3], [4, 5, 6]]]),
        ((1, 2, 3), [[1, 2, 3], [4, 5, 6]]),  # nested less deep than the rank
    ],
)
def test_flat_and_nested_data_give_one_row_major_array(shape: tuple[int, ...], data: list[object]) -> None:
    array = array_from_list("x", "INT32", shape, data)
    assert array.shape == shape and array.ravel().tolist() == [1, 2, 3, 4, 5, 6], array


@pytest.mark.parametrize(
    ("shape", "data"),
    [((0,), []), ((2, 0), [[], []]), ((0, 5), []), ((3, 0), [])],
)
def test_empty_tensors(shape: tuple[int, ...], data: list[object]) -> None:
    for datatype in ("FP32", "BYTES", "BOOL"):
        array = array_from_list("x", datatype, shape, data)
        assert array.shape == shape and array.size == 0, (datatype, array)


def test_a_scalar_has_shape_empty_and_one_element() -> None:
    array = array_from_list("x", "FP64", (), [2.5])
    assert array.shape == () and array.item() == 2.5, array


@pytest.mark.parametrize(
    ("data", "got"),
    [({"a": 1}, "dict"), (1.5, "float"), ("1,2", "str"), (None, "NoneType")],
)
def test_data_that_is_not_a_list_is_named(data: object, got: str) -> None:
    message = bad_request(array_from_list, "x", "FP32", (1,), data)
    assert message == f"input 'x': 'data' must be a list, got {got}", message


def test_an_unknown_datatype_is_named_before_the_data() -> None:
    assert bad_request(array_from_list, "x", "FP128", (1,), "not a list") == "unknown datatype 'FP128'"


@pytest.mark.parametrize(
    ("shape", "data", "rank"),
    [
        ((2,), [[[1]], [[2]]], 1),
        ((1, 1), [[[[1]]]], 2),
        ((), [[1]], 0),
    ],
)
def test_nesting_deeper_than_the_rank_is_refused(shape: tuple[int, ...], data: list[int], rank: int) -> None:
    message = bad_request(array_from_list, "x", "INT32", shape, data)
    assert message == f"input 'x': 'data' is nested deeper than the shape's rank {rank}", message


def test_one_list_level_beyond_the_rank_is_tolerated() -> None:
    """Like Triton, which flattens whatever nesting it gets; the bound only stops deeper nesting."""
    assert array_from_list("x", "INT32", (2,), [[1], [2]]).tolist() == [1, 2]
    assert array_from_list("x", "INT32", (1, 2), [[[1, 2]]]).tolist() == [[1, 2]]


@pytest.mark.parametrize("data", [[[1], 2], [[1, 2], 3, [4]], [[[1]], [2]]])
def test_lists_and_values_mixed_at_one_level_are_refused(data: list[object]) -> None:
    message = bad_request(array_from_list, "x", "INT32", (2, 2, 2), data)
    assert message == "input 'x': 'data' mixes lists and values at one level", message


@pytest.mark.parametrize(
    ("shape", "count"),
    [
        ((2, 3), 5),  # one too few
        ((2, 3), 7),  # one too many
        ((4,), 0),
        ((0,), 1),
        ((), 2),
    ],
)
def test_an_element_count_off_by_one_is_refused_naming_both(shape: tuple[int, ...], count: int) -> None:
    for datatype, value in (("FP32", 1.0), ("BYTES", "a"), ("BOOL", True)):
        message = bad_request(array_from_list, "in", datatype, shape, [value] * count)
        expected = f"input 'in': shape {list(shape)} needs {element_count(shape)} elements, data has {count}"
        assert message == expected, message


def test_the_count_is_checked_before_the_types() -> None:
    message = bad_request(array_from_list, "x", "FP32", (2,), ["a", "b", "c"])
    assert message == "input 'x': shape [2] needs 2 elements, data has 3", message


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("FP32", [1.0, True], "FP32 data must be numbers, got bool True"),
        ("FP16", ["1.0"], "FP16 data must be numbers, got str '1.0'"),
        ("FP64", [None], "FP64 data must be numbers, got NoneType None"),
        ("INT32", [1, 2.0], "INT32 data must be integers, got float 2.0"),
        ("INT8", [False], "INT8 data must be integers, got bool False"),
        ("INT16", ["1"], "INT16 data must be integers, got str '1'"),
        ("INT64", [None], "INT64 data must be integers, got NoneType None"),
        ("UINT8", [1, -1.5, "x"], "UINT8 data must be integers, got float -1.5"),  # the first bad one
        ("UINT16", [True], "UINT16 data must be integers, got bool True"),
        ("UINT32", [0.0], "UINT32 data must be integers, got float 0.0"),
        ("UINT64", [{}], "UINT64 data must be integers, got dict {}"),
        ("BOOL", [True, 1], "BOOL data must be true or false, got int 1"),
        ("BOOL", ["true"], "BOOL data must be true or false, got str 'true'"),
        ("BYTES", ["a", 1], "BYTES data must be strings, got int 1"),
        ("BYTES", [None], "BYTES data must be strings, got NoneType None"),
    ],
)
def test_an_element_of_the_wrong_json_type_is_named(datatype: str, data: list[object], expected: str) -> None:
    message = bad_request(array_from_list, "x", datatype, (len(data),), data)
    assert message == f"input 'x': {expected}", message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("a" * 38, repr("a" * 38)),  # a repr of exactly 40 characters
        ("a" * 39, repr("a" * 39)[:40] + "..."),  # 41 characters
        ("a" * 200, repr("a" * 200)[:40] + "..."),
    ],
)
def test_a_bad_element_is_shown_up_to_40_characters(value: str, shown: str) -> None:
    message = bad_request(array_from_list, "x", "INT32", (1,), [value])
    assert message == f"input 'x': INT32 data must be integers, got str {shown}", message


INTEGER_TYPES = ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]


@pytest.mark.parametrize("datatype", INTEGER_TYPES)
def test_integers_at_the_bounds_of_their_datatype_fit(datatype: str) -> None:
    info = np.iinfo(triton_to_np_dtype(datatype))
    values = [int(info.min), int(info.max)]
    assert array_from_list("x", datatype, (2,), values).tolist() == values, datatype


@pytest.mark.parametrize("datatype", INTEGER_TYPES)
@pytest.mark.parametrize("side", ["below", "above"])
def test_one_past_the_bounds_of_an_integer_datatype_is_refused_not_wrapped(datatype: str, side: str) -> None:
    info = np.iinfo(triton_to_np_dtype(datatype))
    value = int(info.min) - 1 if side == "below" else int(info.max) + 1
    message = bad_request(array_from_list, "x", datatype, (2,), [0, value])
    assert message.startswith(f"input 'x': data does not fit datatype {datatype}: "), message
    assert len(message) > len(f"input 'x': data does not fit datatype {datatype}: "), "numpy's reason is kept"


def test_an_integer_too_large_for_any_float_is_refused_for_fp64() -> None:
    message = bad_request(array_from_list, "x", "FP64", (1,), [10**400])
    assert message == "input 'x': data does not fit datatype FP64: int too large to convert to float", message


@pytest.mark.parametrize(
    ("datatype", "data", "culprit"),
    [
        ("FP16", [70000.0], "70000.0"),
        ("FP16", [-70000], "-70000"),
        ("FP16", [65520.0], "65520.0"),  # rounds up to infinity: the first value past FP16's largest
        ("FP32", [1e39], "1e+39"),
        ("FP32", [1.0, -1e39, 1e40], "-1e+39"),  # the first value out of range is named
        ("FP32", [math.inf, 1e39], "1e+39"),  # an infinity sent as such is not the culprit
        ("FP32", [math.nan, 10**39], "1" + "0" * 39),  # nor is a NaN; a huge integer is
        ("FP32", [10**50], "1" + "0" * 39 + "..."),
    ],
)
def test_a_finite_value_beyond_a_float_datatype_is_refused_not_made_infinite(
    datatype: str, data: list[object], culprit: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and numpy's overflow warning is not raised either
        message = bad_request(array_from_list, "x", datatype, (len(data),), data)
    assert message == f"input 'x': value {culprit} is out of range for {datatype}", message


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_infinities_and_nan_sent_as_such_pass(datatype: str) -> None:
    data = [math.inf, -math.inf, math.nan, 1.0]
    array = array_from_list("x", datatype, (4,), data)
    assert array[0] == np.inf and array[1] == -np.inf and np.isnan(array[2]) and array[3] == 1.0, array


@pytest.mark.parametrize(("datatype", "value"), [("FP16", 65504.0), ("FP16", 65519.0), ("FP32", 3.4e38)])
def test_the_largest_finite_values_of_a_float_datatype_fit(datatype: str, value: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        array = array_from_list("x", datatype, (1,), [value])
    assert np.isfinite(array).all() and array.item() == pytest.approx(value, rel=1e-3), array


def test_a_float_overflow_raises_no_numpy_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refusal(array_from_list, "x", "FP16", (1,), [1e6])
    assert not caught, [str(warning.message) for warning in caught]


# ---------------------------------------------------------------------------------------------------
# reshape


def test_reshape_gives_the_array_its_shape() -> None:
    array = reshape("x", np.arange(6), (2, 3))
    assert array.shape == (2, 3) and array[1, 0] == 3, array
    assert reshape("x", np.zeros(1), (1,) * 64).ndim == 64, "numpy's own limit, exactly"


def test_numpy_refusing_a_shape_is_a_400_naming_the_shape() -> None:
    shape = (1,) * 65
    message = bad_request(reshape, "x", np.zeros(1), shape)
    assert message.startswith(f"input 'x': cannot take shape {repr(list(shape))[:120]}...: "), message
    assert "64" in message, f"numpy's reason is kept: {message}"


@pytest.mark.parametrize(("datatype", "value"), [("FP32", 1.0), ("INT8", 1), ("BOOL", True), ("BYTES", "a")])
def test_json_data_numpy_cannot_shape_is_a_400_naming_the_input(datatype: str, value: object) -> None:
    shape = (1,) * 65  # one element, but more dimensions than numpy allows
    message = bad_request(array_from_list, "in", datatype, shape, [value])
    assert message.startswith(f"input 'in': cannot take shape {repr(list(shape))[:120]}...: "), message


def test_a_short_shape_numpy_refuses_is_shown_whole() -> None:
    message = bad_request(reshape, "x", np.zeros(4), (3,))
    assert message.startswith("input 'x': cannot take shape [3]: cannot reshape"), message


# ---------------------------------------------------------------------------------------------------
# check_against_spec and check_against_model

SPEC = TensorSpec("x", "FP32", (-1, 4))


@pytest.mark.parametrize("shape", [(0, 4), (1, 4), (7, 4)])
def test_a_matching_input_passes_any_size_on_a_variable_axis(shape: tuple[int, ...]) -> None:
    check_against_spec("x", "FP32", shape, SPEC)
    check_against_model(InputTensor("x", "FP32", shape, np.zeros(shape, np.float32)), SPEC)


@pytest.mark.parametrize(
    ("datatype", "shape", "expected"),
    [
        ("FP128", (1, 4), "unknown datatype 'FP128'"),  # unknown is said as such, not as a mismatch
        ("FP64", (1, 4), "input 'x': datatype FP64 does not match the model's FP32"),
        ("INT32", (9,), "input 'x': datatype INT32 does not match the model's FP32"),  # datatype first
        ("FP32", (4,), "input 'x': shape [4] has rank 1, the model expects rank 2 [-1, 4]"),
        ("FP32", (1, 4, 1), "input 'x': shape [1, 4, 1] has rank 3, the model expects rank 2 [-1, 4]"),
        ("FP32", (), "input 'x': shape [] has rank 0, the model expects rank 2 [-1, 4]"),
        ("FP32", (1, 3), "input 'x': dimension 1 is 3, the model expects 4 (shape [-1, 4])"),
        ("FP32", (1, 5), "input 'x': dimension 1 is 5, the model expects 4 (shape [-1, 4])"),
        ("FP32", (2, 0), "input 'x': dimension 1 is 0, the model expects 4 (shape [-1, 4])"),
    ],
)
def test_a_mismatch_with_the_model_is_named(datatype: str, shape: tuple[int, ...], expected: str) -> None:
    assert bad_request(check_against_spec, "x", datatype, shape, SPEC) == expected
    tensor = InputTensor("x", datatype, shape, np.zeros(0))
    assert bad_request(check_against_model, tensor, SPEC) == expected


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((2, 3, 4), None),
        ((1, 3, 4), "input 'img': dimension 0 is 1, the model expects 2 (shape [2, -1, 4])"),
        ((3, 3, 4), "input 'img': dimension 0 is 3, the model expects 2 (shape [2, -1, 4])"),
        ((2, 3, 5), "input 'img': dimension 2 is 5, the model expects 4 (shape [2, -1, 4])"),
        ((2, 0, 3), "input 'img': dimension 2 is 3, the model expects 4 (shape [2, -1, 4])"),
    ],
)
def test_every_fixed_dimension_is_checked(shape: tuple[int, ...], expected: str | None) -> None:
    spec = TensorSpec("img", "UINT8", (2, -1, 4))
    if expected is None:
        check_against_spec("img", "UINT8", shape, spec)
    else:
        assert bad_request(check_against_spec, "img", "UINT8", shape, spec) == expected
