"""Property tests: random shapes, dtypes, values and parameters at the public functions.

Every call either raises a ``SegNetError`` with a message, or returns results of the
documented shape and dtype with finite values; the inputs are never modified. Inputs
that the documentation says are refused (NaN, infinite values, complex or object
dtypes, empty arrays, bad parameters) must be refused.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import napari_segnet as ns

# Colour images are converted with a warning, and float16 overflow is made on purpose.
pytestmark = pytest.mark.filterwarnings(
    "ignore::napari_segnet.SegNetWarning", "ignore:overflow encountered:RuntimeWarning"
)

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every run
    database=None,  # nothing written beside the tests
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

GOOD_DTYPES = [np.bool_, np.uint8, np.uint16, np.int16, np.int64, np.uint64]
GOOD_DTYPES += [np.float16, np.float32, np.float64]
# What makes an array refused whatever the other arguments.
DEFECTS = ["complex", "object", "nan", "inf", "-inf", "huge", "empty", "0d", "1d", "6d"]
VIEWS = ["plain", "readonly", "reversed", "strided"]


def _model() -> ns.SegNet:
    m = ns.build_model("unet", n_classes=3, depth=1, width=2).eval()
    m.meta["target"] = "instances"
    m.meta["diameter"] = 8.0
    return m


MODEL = _model()


@st.composite
def shapes(draw, min_dims: int, max_dims: int) -> tuple[int, ...]:
    """Small shapes with 1-sized axes and huge aspect ratios."""
    ndim = draw(st.integers(min_dims, max_dims))
    if ndim == 2 and draw(st.integers(0, 3)) == 0:
        long = draw(st.integers(100, 300))
        return draw(st.sampled_from([(1, long), (long, 2), (3, long)]))
    edge = {1: 12, 2: 24, 3: 8}.get(ndim, 4)
    return tuple(draw(st.lists(st.integers(1, edge), min_size=ndim, max_size=ndim)))


def _mostly_good(draw) -> str | None:
    """One defect in a third of the examples, none in the others."""
    return draw(st.sampled_from([*[None] * (2 * len(DEFECTS)), *DEFECTS]))


@st.composite
def images(draw, min_dims: int = 2, max_dims: int = 5, defect: str | None = "draw"):
    """``(array, defect)``: an array of a numeric dtype (from bool to uint64 and
    float16), as a read-only, reversed or strided view, with at most one defect that
    makes it refused: a complex or object dtype, a NaN, an infinite or a beyond-float32
    value, a 0-sized axis, or a wrong number of dimensions."""
    if defect == "draw":
        defect = _mostly_good(draw)
    ndim = {"0d": 0, "1d": 1, "6d": 6}.get(defect)
    shape = draw(shapes(min_dims, max_dims)) if ndim is None else (2,) * ndim
    if defect == "empty":
        shape = tuple(
            0 if i == draw(st.integers(0, len(shape) - 1)) else n for i, n in enumerate(shape)
        )
    dtype = np.dtype(draw(st.sampled_from(GOOD_DTYPES)))
    if defect in ("complex", "object"):
        dtype = np.dtype(np.complex64 if defect == "complex" else object)
    if defect in ("nan", "inf", "-inf", "huge") and dtype.kind != "f":
        dtype = np.dtype(np.float64 if defect == "huge" else np.float32)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arr = np.asarray(rng.random(shape) * 200).astype(dtype)
    if dtype.kind in "iu" and draw(st.integers(0, 4)) == 0:
        arr = np.full(shape, np.iinfo(dtype).max, dtype)  # the largest values, allowed
    if defect in ("nan", "inf", "-inf", "huge") and arr.size:
        value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": 1e300}[defect]
        arr.flat[rng.integers(arr.size)] = value
    view = draw(st.sampled_from(VIEWS))
    if view == "reversed" and arr.ndim:
        arr = arr[::-1]
    elif view == "strided" and arr.ndim:
        arr = np.repeat(arr, 2, axis=-1)[..., ::2]
    elif view == "readonly":
        arr.flags.writeable = False
    return arr, defect


@st.composite
def arguments(draw, options: dict[str, tuple[list, list]]):
    """``(kwargs, broken)``: allowed values for every argument but at most one, which
    gets a value the documentation refuses (``broken`` names it)."""
    names = [name for name, (_, bad) in options.items() if bad]
    broken = draw(st.sampled_from([*[None] * (2 * len(names)), *names]))
    kwargs = {
        name: draw(st.sampled_from(bad if name == broken else good))
        for name, (good, bad) in options.items()
    }
    return kwargs, broken


ENGINE = {
    "tile_size": ([None, 16, 8.0, (16, 24)], [0, -8, 2.5, math.nan, "big", True, (16,), 10**9]),
    "batch_size": ([None, 1, 2], [0, 1.5, "a", -1]),
    "border": ([None, 0, 8], [-1, math.nan, "8"]),
    "device": (["cpu", "CPU", torch.device("cpu"), "auto"], ["gpu", 5, "cpu:x", ""]),
    "precision": (["auto", "float32"], ["double", None]),
}
if not torch.cuda.is_available():
    ENGINE["device"][1].extend(["cuda", torch.device("cuda"), "cuda:1"])
SEGMENT = {
    "tile_size": ENGINE["tile_size"],
    "diameter": ([None, "auto", 8.0, 6], [0, -3, math.nan, math.inf, 1e-3, 1e6, "x", True]),
    "anisotropy": ([1.0, 2], [0, -1.0, math.nan, "z"]),
    "instances": ([None, True, False], ["yes", 2]),
    "instance_options": (
        [None, {}, {"mode": "components"}, {"min_size": 3}],
        [{"bogus": 1}, {"min_size": -1}, [1], {"interior_threshold": math.nan}],
    ),
    "crf": ([False, {"n_iter": 1}], [{"bogus": 1}, {"n_iter": -1}, "yes", {"foreground": [7]}]),
}


def _same(before, after) -> None:
    """The input is unchanged (NaN equal to NaN)."""
    np.testing.assert_array_equal(np.asarray(after), before)


def _call(fn, *inputs):
    """``fn()``'s result, or None when it raised a SegNetError with a message; any
    other exception fails the test. The inputs must come back unchanged."""
    copies = [np.array(x, copy=True) for x in inputs]
    try:
        result = fn()
        event("result")
    except ns.SegNetError as e:
        assert str(e).strip(), "an error without a message"
        event("SegNetError")
        result = None
    for x, c in zip(inputs, copies):
        _same(c, x)
    return result


def _out_shape(shape: tuple[int, ...], rgb_ok: bool) -> tuple[int, ...] | None:
    """The results' shape for a grey 2D model, by the documented axes guess (None:
    the image has colour channels, which only ``segment`` converts)."""
    rgb = (len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) > 4) or (
        len(shape) in (4, 5) and shape[-1] in (3, 4)
    )
    if rgb:
        return shape[:-1] if rgb_ok else None
    if len(shape) == 5:  # TZCYX
        return shape[:2] + shape[3:]
    return shape


def _probabilities_ok(prob, shape) -> None:
    prob = np.asarray(prob)
    assert prob.dtype == np.float32 and prob.shape == (3, *shape)
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1 + 1e-5
    np.testing.assert_allclose(prob.sum(0), 1, atol=1e-4)


@FUZZ
@given(images(), arguments(ENGINE))
def test_predict_and_predict_dask(image, args):
    arr, defect = image
    params, broken = args
    prob = _call(lambda: ns.predict(arr, MODEL, **params), arr)
    if defect or broken:
        assert prob is None, f"predict accepted a {defect} image or {broken}={params.get(broken)!r}"
    elif arr.ndim == 2:
        assert prob is not None, "predict refused a good 2D image"
    if prob is not None:
        shape = _out_shape(arr.shape, rgb_ok=False)
        assert shape is not None, "predict took colour channels for a grey model"
        _probabilities_ok(prob, shape)
    # The dask engine refuses the same and gives the same probabilities.
    dask_params = {k: v for k, v in params.items() if k != "tile_size"}
    if dask_params["batch_size"] is None:
        dask_params["batch_size"] = 1
    lazy = _call(lambda: ns.predict_dask(arr, MODEL, **dask_params).compute(), arr)
    if defect or broken not in (None, "tile_size"):
        assert lazy is None, f"predict_dask accepted a {defect} image or {broken}"
    if prob is not None:
        assert lazy is not None, "predict_dask refused what predict takes"
        np.testing.assert_allclose(lazy, prob, atol=1e-5)


@FUZZ
@given(images(), arguments(SEGMENT))
def test_segment(image, args):
    arr, defect = image
    params, broken = args
    res = _call(lambda: ns.segment(arr, MODEL, device="cpu", **params), arr)
    if defect or broken:
        assert res is None, f"segment accepted a {defect} image or {broken}={params.get(broken)!r}"
    elif arr.ndim == 2:
        assert res is not None, "segment refused a good 2D image"
    if res is None:
        return
    shape = _out_shape(arr.shape, rgb_ok=True)
    _probabilities_ok(res.probabilities, shape)
    assert res.semantic.shape == shape and res.semantic.dtype == np.uint8
    assert res.semantic.max() < 3
    if res.instances is not None:
        assert res.instances.shape == shape and res.instances.dtype == np.int32
        ids = np.unique(res.instances)
        assert ids.min() >= 0 and len(ids) - (ids[0] == 0) == res.instances.max()


@st.composite
def probability_maps(draw):
    """``(array, defect)``: maps of 1 to 4 classes over 2 or 3 spatial axes, any dtype,
    as a broadcast (read-only) view or a copy."""
    n_classes = draw(st.sampled_from([3, 3, 2, 4, 1]))
    arr, defect = draw(images(min_dims=2, max_dims=3))
    arr = np.broadcast_to(arr, (n_classes, *arr.shape))
    if draw(st.booleans()):
        arr = np.array(arr)
    if defect == "huge":
        defect = None  # finite: labelled like any other value
    if n_classes < 2 and defect is None:
        defect = "one class"
    return arr, defect


LABEL = {
    "mode": (["auto", "boundary", "components"], ["watershed", None]),
    "ndim": ([None, 2], [4, "2", 1]),
    "min_size": ([None, 0, 5], [-3, math.nan, "big"]),
    "interior_threshold": ([0.5, 0.0, 1.0], [-0.1, 1.5, math.nan, "high"]),
    "split_touching": ([False, True], []),
    "min_distance": ([1, 5], [0, -3, math.inf]),
}


@FUZZ
@given(probability_maps(), arguments(LABEL))
def test_label_instances(probs, args):
    arr, defect = probs
    kw, broken = args
    if defect == "6d" and kw["ndim"] is not None:
        defect = None  # a stack of 2D maps, labelled map by map
    labels = _call(lambda: ns.label_instances(arr, **kw), arr)
    if defect or broken:
        assert labels is None, f"accepted a {defect} map or {broken}={kw.get(broken)!r}"
    if labels is not None:
        assert labels.shape == arr.shape[1:] and labels.dtype == np.int32
        ids = np.unique(labels)
        assert ids.min() >= 0 and len(ids) - (ids[0] == 0) == labels.max()  # ids 1..N


BLOCKWISE = {
    "block_size": ([None, 1, 7, (5, 9)], [0, -3, (4, 4, 4, 4), 2.5, "8"]),
    "halo": ([0, 3, 64], [-1, math.nan, 1.5]),
    "out": (["none", "int32", "int64"], ["float32", "uint8", "readonly", "shape", "list"]),
}


def _blockwise_out(kind: str, shape: tuple[int, ...]):
    if kind == "none":
        return None
    if kind == "list":
        return np.zeros(shape, np.int32).tolist()
    dtype = {"readonly": "int32", "shape": "int32"}.get(kind, kind)
    out = np.zeros((*shape, 1) if kind == "shape" else shape, dtype)
    out.flags.writeable = kind != "readonly"
    return out


@FUZZ
@given(probability_maps(), arguments(BLOCKWISE))
def test_label_instances_blockwise(probs, args):
    arr, defect = probs
    kw, broken = args
    shape = arr.shape[1:]
    if isinstance(kw["block_size"], tuple) and len(kw["block_size"]) != len(shape):
        broken = broken or "block_size"  # one size per spatial axis
    out = _blockwise_out(kw["out"], shape)
    result = _call(
        lambda: ns.label_instances_blockwise(
            arr, block_size=kw["block_size"], halo=kw["halo"], out=out
        ),
        arr,
    )
    if defect or broken:
        assert result is None, f"accepted a {defect} map or {broken}={kw.get(broken)!r}"
    if result is not None:
        assert result.shape == shape and np.asarray(result).dtype.kind == "i"
        assert out is None or result is out
        if kw["halo"] == 64 and max(shape) <= 64:
            # Every block sees the whole image: the in-memory labelling, renumbered.
            whole = ns.label_instances(arr)
            assert int(result.max()) == int(whole.max())
            np.testing.assert_array_equal(result > 0, whole > 0)


@st.composite
def label_images(draw):
    """``(labels, defect)``: instance labels of any integer, bool or float dtype with
    ids up to 2**64 - 1, and at most one defect."""
    defect = draw(st.sampled_from([None] * 8 + ["negative", "fraction", "nan", "complex"]))
    shape = draw(shapes(2, 3)) if defect else draw(st.sampled_from([(1, 2, 3, 4), (5,), ()]))
    if not defect and draw(st.integers(0, 3)) > 0:
        shape = draw(shapes(2, 3))
    dtype = np.dtype(draw(st.sampled_from(GOOD_DTYPES)))
    if defect in ("fraction", "nan"):
        dtype = np.dtype(np.float32)
    elif defect == "negative":
        dtype = np.dtype(np.int16)
    elif defect == "complex":
        dtype = np.dtype(np.complex64)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = rng.integers(0, 4, shape)
    scale = draw(st.sampled_from([1, 1, 2**20, 2**40]))
    if (dtype.kind in "iu" and scale > np.iinfo(dtype).max // 4) or (
        dtype.kind == "f" and 4 * scale > float(np.finfo(dtype).max)
    ):
        scale = 1
    lab = np.asarray(ids * scale).astype(dtype)
    if lab.size and dtype.kind == "u" and draw(st.booleans()):
        lab.flat[0] = np.iinfo(dtype).max
    if lab.size and defect in ("negative", "fraction", "nan"):
        lab.flat[0] = {"negative": -1, "fraction": 0.5, "nan": np.nan}[defect]
    if lab.ndim not in (2, 3):
        defect = f"{lab.ndim}D"
    return lab, defect


WEIGHTS = {
    "w0": ([10.0, 0, 3], [-10, math.nan, math.inf, "a"]),
    "sigma": ([5.0, 2], [0, -1, math.nan, math.inf]),
    "spacing": ([None, 1.0, "per axis"], [(1, 1, 1, 2), (1, math.nan), 0, "x"]),
    "class_balance": ([True, False], ["no"]),
}


@FUZZ
@given(label_images(), arguments(WEIGHTS))
def test_boundary_weight_map(labels, args):
    lab, defect = labels
    kw, broken = args
    if kw["spacing"] == "per axis":
        kw["spacing"] = tuple(range(1, lab.ndim + 1))
    w = _call(lambda: ns.boundary_weight_map(lab, **kw), lab)
    if defect or broken:
        assert w is None, f"accepted {defect} labels or {broken}={kw.get(broken)!r}"
    else:
        assert w is not None, "refused good labels"
    if w is not None:
        assert w.shape == lab.shape and w.dtype == np.float32
        assert np.isfinite(w).all() and w.min() >= 1 - 1e-6
        # Class weights are at most the pixel count, the border term at most w0.
        assert w.max() <= lab.size + kw["w0"] + 1e-3
        # Renumbered ids give the same weights: only which pixels share an object counts.
        if lab.dtype.kind in "iu":
            ids, small = np.unique(lab, return_inverse=True)
            small = small.reshape(lab.shape) + (0 if ids[0] == 0 else 1)
            np.testing.assert_allclose(w, ns.boundary_weight_map(small, **kw), atol=1e-5)


CRF = {
    "n_iter": ([1, 0], [-1, 2.5, "a"]),
    "bilateral_srgb": ([13.0], [0, math.nan]),
    "foreground": ([None, (1,), (1, 1)], [(0, 1, 2), (5,), "x", (1.5,)]),
}


@FUZZ
@given(images(min_dims=2, max_dims=3), st.sampled_from([2, 3]), arguments(CRF))
def test_refine_crf(image, n_classes, args):
    arr, defect = image
    kw, broken = args
    if kw["foreground"] == (0, 1, 2) and n_classes == 3:
        pass  # all classes: refused
    elif kw["foreground"] == (0, 1, 2):
        kw["foreground"] = (0, 1)  # all of two classes: refused too
    prob = np.random.default_rng(0).random((n_classes, *arr.shape)).astype(np.float32)
    prob /= np.maximum(prob.sum(0), 1e-6)
    q = _call(lambda: ns.refine_crf(arr, prob, device="cpu", **kw), arr, prob)
    if defect or broken:
        assert q is None, f"accepted a {defect} image or {broken}={kw.get(broken)!r}"
    if q is not None:
        assert q.shape == prob.shape and q.dtype == np.float32 and np.isfinite(q).all()
        np.testing.assert_allclose(q.sum(0), 1, atol=1e-4)


def test_nothing_written_beside_the_tests(tmp_path, monkeypatch):
    """The functions fuzzed above write no files (only ``output=``/CLI paths write)."""
    monkeypatch.chdir(tmp_path)
    img = np.random.default_rng(0).random((20, 30), dtype=np.float32)
    ns.segment(img, MODEL, device="cpu", diameter=None)
    ns.predict_dask(img, MODEL, device="cpu").compute()
    with pytest.raises(ns.SegNetError):
        ns.segment("image.tif", MODEL)
    assert os.listdir(tmp_path) == []


IMAGE = np.random.default_rng(1).random((24, 32), dtype=np.float32)
LABELS = np.kron(np.arange(4).reshape(2, 2), np.ones((8, 8), np.int64))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ns.segment(IMAGE, MODEL, tile_size="big"), "tile_size must be an integer"),
        (lambda: ns.segment(IMAGE, MODEL, tile_size=math.nan), "tile_size must be"),
        (lambda: ns.segment(IMAGE, MODEL, diameter=math.nan), "diameter must be positive"),
        (lambda: ns.segment(IMAGE, MODEL, diameter=1e-3), "would zoom the image by"),
        (lambda: ns.segment(IMAGE, MODEL, diameter=math.inf), "diameter must be positive"),
        (lambda: ns.segment(IMAGE, MODEL, instance_options={"bogus": 1}), "unknown instance"),
        (lambda: ns.segment(np.where(IMAGE > 0.9, np.inf, IMAGE), MODEL), "infinite values"),
        (lambda: ns.segment((IMAGE * 1e5).astype(np.float16), MODEL), "float16 holds at most"),
        (lambda: ns.segment("cells.tif", MODEL), "is a path"),
        (lambda: ns.segment(None, MODEL), "image is None"),
        (lambda: ns.predict(IMAGE, MODEL, out=np.zeros((3, 24, 32), np.int32)), "float32"),
        (lambda: ns.predict_dask(IMAGE.astype(np.complex64), MODEL), "complex"),
        (lambda: ns.predict_dask(IMAGE, MODEL, chunk_size=-64), "chunk_size must be"),
        (lambda: ns.label_instances(np.zeros((3, 0, 0))), "probabilities is empty"),
        (lambda: ns.label_instances(np.ones((3, 4, 4)), min_distance=-3), "min_distance"),
        (lambda: ns.label_instances_blockwise(np.ones((3, 4, 4)), block_size=0), "block_size"),
        (lambda: ns.boundary_weight_map(LABELS, w0=-10), "w0 must be"),
        (lambda: ns.boundary_weight_map(LABELS, sigma=math.nan), "sigma must be"),
        (lambda: ns.boundary_weight_map(LABELS, spacing=(1, 2, 3)), "spacing must be"),
    ],
)
def test_refused_with_a_message_that_names_the_problem(call, message):
    with pytest.raises(ns.SegNetError, match=message):
        call()


def test_read_only_out_and_cuda_without_cuda():
    ro = np.zeros((3, 24, 32), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ns.SegNetError, match="read-only"):
        ns.predict(IMAGE, MODEL, out=ro)
    if not torch.cuda.is_available():
        with pytest.raises(ns.SegNetError, match="not available"):
            ns.segment(IMAGE, MODEL, device=torch.device("cuda"))


def test_short_axes_and_huge_label_ids():
    # predict_dask takes an image shorter than the model's halo, as predict does.
    thin = np.random.default_rng(2).random((4, 300), dtype=np.float32)
    lazy = ns.predict_dask(thin, MODEL, device="cpu").compute()
    np.testing.assert_allclose(lazy, ns.predict(thin, MODEL, device="cpu"), atol=1e-5)
    # Label ids near 2**64 give the weights of the same objects numbered 1..N.
    big = LABELS.astype(np.uint64) * np.uint64(2**62)
    np.testing.assert_allclose(ns.boundary_weight_map(big), ns.boundary_weight_map(LABELS))
