"""Dense CRF: against a brute-force mean field on tiny images; better borders; bad input."""

from __future__ import annotations

import numpy as np
import pytest

import napari_segnet as ns
from napari_segnet.postprocess.crf import UNARY_CLIP, intensity_scale


def brute_force_crf(image, prob, n_iter, gsxy, gcompat, bsxy, bsrgb, bcompat):
    """Mean field with every pairwise sum computed exactly (N x N kernels)."""
    c, h, w = prob.shape
    yy, xx = np.mgrid[:h, :w]
    pos = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
    inten = intensity_scale(image).reshape(h * w, -1)

    def kernel(feat):
        d2 = ((feat[:, None, :] - feat[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / 2)

    kg = kernel(pos / gsxy)
    kb = kernel(np.concatenate([pos / bsxy, inten / bsrgb], 1))
    ng = 1 / np.sqrt(kg.sum(1))
    nb = 1 / np.sqrt(kb.sum(1))
    unary = np.log(np.clip(prob.reshape(c, -1), UNARY_CLIP, None))
    q = np.exp(unary) / np.exp(unary).sum(0)
    for _ in range(n_iter):
        mg = ng * (kg @ (ng[:, None] * q.T)).T
        mb = nb * (kb @ (nb[:, None] * q.T)).T
        logits = unary + gcompat * mg + bcompat * mb
        q = np.exp(logits - logits.max(0))
        q /= q.sum(0)
    return q.reshape(c, h, w)


def _tiny(seed=0, shape=(11, 13)):
    rng = np.random.default_rng(seed)
    img = np.zeros((*shape, 3), np.uint8)
    img[:, : shape[1] // 2] = (200, 40, 40)
    img[:, shape[1] // 2 :] = (30, 60, 220)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    prob = rng.dirichlet(np.ones(3), size=shape).transpose(2, 0, 1).astype(np.float32)
    return img, prob


@pytest.mark.parametrize("gsxy", [3.0, 9.0])
def test_gaussian_kernel_is_exact(gsxy):
    # 9 pixels: filtered in two stages, the second one dilated.
    img, prob = _tiny()
    params = (5, gsxy, 3.0, 80.0, 13.0, 0.0)
    got = ns.refine_crf(img, prob, *params, device="cpu")
    ref = brute_force_crf(img, prob, *params)
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("bsxy,bsrgb", [(80.0, 13.0), (5.0, 30.0), (3.0, 60.0)])
def test_bilateral_matches_brute_force(bsxy, bsrgb):
    img, prob = _tiny(1)
    params = (5, 3.0, 3.0, bsxy, bsrgb, 10.0)
    got = ns.refine_crf(img, prob, *params, device="cpu")
    ref = brute_force_crf(img, prob, *params)
    # The lattice approximates the Gaussian in feature space (as in pydensecrf).
    assert np.abs(got - ref).mean() < 0.02
    assert (got.argmax(0) == ref.argmax(0)).mean() > 0.97


def _scene(seed=0, shape=(120, 160)):
    """Four flat colour regions with noise; a coarse, blurred and noisy prediction."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    gt = np.zeros(shape, int)
    gt[(yy - 60) ** 2 + (xx - 50) ** 2 < 30**2] = 1
    gt[(xx > 95) & (yy < 70)] = 2
    gt[(xx > 80) & (yy > 85)] = 3
    colours = np.array([[30, 30, 30], [220, 60, 60], [60, 200, 70], [70, 80, 230]])
    img = np.clip(colours[gt] + rng.normal(0, 12, (*shape, 3)), 0, 255).astype(np.uint8)
    onehot = np.stack([(gt == k).astype(float) for k in range(4)])
    coarse = np.stack([ndi.gaussian_filter(o, 6) for o in onehot])
    coarse = coarse + rng.uniform(0, 0.6, coarse.shape)
    coarse /= coarse.sum(0, keepdims=True)
    return img, coarse.astype(np.float32), gt


def test_refinement_snaps_borders_to_edges():
    img, coarse, gt = _scene()
    before = ns.mean_iou(gt, coarse.argmax(0), 4)
    refined = ns.refine_crf(img, coarse, device="cpu")
    after = ns.mean_iou(gt, refined.argmax(0), 4)
    assert after > before + 0.05, (before, after)
    assert after > 0.9
    np.testing.assert_allclose(refined.sum(0), 1, atol=1e-5)


def test_grey_16bit_float_and_stacks():
    img, coarse, _gt = _scene(1, (64, 80))
    grey8 = img.mean(-1).astype(np.uint8)
    a = ns.refine_crf(grey8.astype(np.float32) / 255.0, coarse)
    b = ns.refine_crf(grey8.astype(np.float32) * 1000.0, coarse)
    np.testing.assert_allclose(a, b, atol=1e-4)  # the intensity scale is normalised
    stack = np.stack([img, img[::-1]])
    cstack = np.stack([coarse, coarse[:, ::-1]], axis=1)
    out = ns.refine_crf(stack, cstack)
    np.testing.assert_allclose(out[:, 0], ns.refine_crf(img, coarse), atol=1e-5)
    np.testing.assert_allclose(out[:, 1], ns.refine_crf(img[::-1], coarse[:, ::-1]), atol=1e-5)
    vol = ns.refine_crf(stack, cstack, volume=True)
    assert vol.shape == cstack.shape


def test_inputs_untouched_and_bad_parameters():
    img, prob = _tiny()
    i0, p0 = img.copy(), prob.copy()
    ns.refine_crf(img, prob)
    np.testing.assert_array_equal(img, i0)
    np.testing.assert_array_equal(prob, p0)
    for kw, match in [
        ({"gaussian_sxy": 0}, "gaussian_sxy"),
        ({"bilateral_srgb": -1}, "bilateral_srgb"),
        ({"bilateral_compat": np.nan}, "bilateral_compat"),
        ({"n_iter": 2.5}, "n_iter"),
    ]:
        with pytest.raises(ns.SegNetError, match=match):
            ns.refine_crf(img, prob, **kw)
    with pytest.raises(ns.SegNetError, match="does not match"):
        ns.refine_crf(img[:5], prob)
    with pytest.raises(ns.SegNetError, match="non-negative"):
        ns.refine_crf(img, -prob)
    with pytest.raises(ns.SegNetError, match="C >= 2"):
        ns.refine_crf(img, prob[:1])
    with pytest.raises(ns.SegNetError, match="empty"):
        ns.refine_crf(img[:, :0], prob[:, :, :0])
    bad = img.astype(np.float32)
    bad[2, 3] = np.inf
    with pytest.raises(ns.SegNetError, match="infinite"):
        ns.refine_crf(bad, prob)
    with pytest.raises(ns.SegNetError, match="positive number"):
        ns.refine_crf(img, prob, gaussian_sxy=np.inf)
    # Widths so small that the lattice's codes would overflow: an error, not a crash.
    with pytest.raises(ns.SegNetError, match="too small"):
        ns.refine_crf(img, prob, bilateral_srgb=1e-30)
    np.testing.assert_array_equal(img, i0)
    np.testing.assert_array_equal(prob, p0)


def test_foreground_classes_refined_as_one():
    img, coarse, _gt = _scene(6, (50, 60))
    # Split class 1 into an "interior" and a thin-looking "boundary" share.
    rng = np.random.default_rng(7)
    split = rng.random(coarse.shape[1:]).astype(np.float32)
    prob = np.stack([coarse[0] + coarse[2] + coarse[3], coarse[1] * split, coarse[1] * (1 - split)])
    before = prob.copy()
    got = ns.refine_crf(img, prob, foreground=(2, 1))
    two = ns.refine_crf(img, np.stack([prob[0], prob[1] + prob[2]]))
    np.testing.assert_allclose(got[0], two[0], atol=1e-6)
    np.testing.assert_allclose(got[1], two[1] * split, atol=1e-5)
    np.testing.assert_allclose(got[2], two[1] * (1 - split), atol=1e-5)
    np.testing.assert_array_equal(prob, before)
    for bad in [(), (0, 1, 2), (3,), (-1,)]:
        with pytest.raises(ns.SegNetError, match="foreground"):
            ns.refine_crf(img, prob, foreground=bad)


def test_segment_crf_keeps_touching_nuclei_apart():
    # With the bundled instance model, the CRF moves outlines but must not smooth away
    # the thin boundary class: touching nuclei stay separate objects.
    img, gt = ns.data.synthetic_nuclei((256, 256), seed=3)
    model = ns.load_model("nuclei")
    plain = ns.segment(img, model)
    refined = ns.segment(img, model, crf=True)
    assert (refined.semantic == 2).sum() > 0.5 * (plain.semantic == 2).sum()
    ap_plain = ns.average_precision(gt, plain.instances, 0.5)
    ap_crf = ns.average_precision(gt, refined.instances, 0.5)
    assert ap_crf > ap_plain - 0.05
    # The three classes refined as they are lose the boundaries and merge nuclei.
    merged = ns.segment(img, model, crf={"foreground": None})
    assert ns.average_precision(gt, merged.instances, 0.5) < ap_crf - 0.2


def test_progress_and_cancel():
    from threading import Event

    img, coarse, _gt = _scene(5, (40, 50))
    stack, cstack = np.stack([img, img[::-1]]), np.stack([coarse, coarse[:, ::-1]], axis=1)
    seen = []
    out = ns.refine_crf(stack, cstack, n_iter=3, progress=lambda d, n: seen.append((d, n)))
    # Per slice: the lattice build, then each of the 3 iterations.
    assert seen == [(k, 8) for k in range(9)]
    np.testing.assert_array_equal(out, ns.refine_crf(stack, cstack, n_iter=3))
    before = cstack.copy()
    cancel = Event()

    def stop_after_two(done, total):
        if done == 2:
            cancel.set()

    with pytest.raises(ns.Cancelled, match="2 of 8"):
        ns.refine_crf(stack, cstack, n_iter=3, progress=stop_after_two, cancel=cancel)
    with pytest.raises(ns.Cancelled):
        ns.refine_crf(img, coarse, cancel=cancel)
    np.testing.assert_array_equal(cstack, before)


def test_segment_with_crf(small_unet):
    img = (np.random.default_rng(2).random((48, 40)) * 255).astype(np.uint8)
    plain = ns.segment(img, small_unet)
    res = ns.segment(img, small_unet, crf={"n_iter": 3, "bilateral_compat": 5.0})
    expected = ns.refine_crf(img, plain.probabilities, n_iter=3, bilateral_compat=5.0)
    np.testing.assert_allclose(res.probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(res.semantic, expected.argmax(0))


def test_lattice_chunks_give_the_same_filter(monkeypatch):
    # The lattice is built chunk by chunk; the chunking must not change the result.
    import torch

    from napari_segnet.postprocess import lattice

    rng = np.random.default_rng(3)
    feats = torch.from_numpy(rng.normal(0, 2, (5000, 5)).astype(np.float32))
    values = torch.from_numpy(rng.random((5000, 3), dtype=np.float32))
    whole = lattice.PermutohedralLattice(feats)
    monkeypatch.setitem(lattice._CHUNK, "cpu", 700)
    chunked = lattice.PermutohedralLattice(feats)
    assert chunked.m == whole.m and len(chunked._chunks) == 8
    np.testing.assert_allclose(chunked.filter(values), whole.filter(values), rtol=1e-5)


@pytest.mark.parametrize("setting", ["_TABLE_LIMIT", "_CODE32_LIMIT"])
def test_lattice_variants_agree(monkeypatch, setting):
    # Corner codes come from a table of rank tuples where it is small, else from a
    # loop over the ranks (many feature dimensions); vertex codes are 32-bit where the
    # features' range allows, else 64-bit. Each pair must build the same lattice.
    import torch

    from napari_segnet.postprocess import lattice

    rng = np.random.default_rng(4)
    feats = torch.from_numpy(rng.normal(0, 2, (3000, 5)).astype(np.float32))
    values = torch.from_numpy(rng.random((3000, 2), dtype=np.float32))
    usual = lattice.PermutohedralLattice(feats)
    monkeypatch.setattr(lattice, setting, 0)
    other = lattice.PermutohedralLattice(feats)
    assert usual.vertex_codes.dtype == torch.int32
    if setting == "_CODE32_LIMIT":
        assert other.vertex_codes.dtype == torch.int64
    assert torch.equal(other.vertex_codes.long(), usual.vertex_codes.long())
    np.testing.assert_allclose(other.filter(values), usual.filter(values), rtol=1e-6)


@pytest.mark.parametrize("shape", [(37, 23), (9, 14, 11)])
@pytest.mark.parametrize("rows", [1, 5, 13, 100])
def test_gaussian_strips_match_scipy(shape, rows):
    # The Gaussian messages are blurred a strip of rows at a time; every strip size
    # (also thinner than the kernel's radius) must give the zero-padded Gaussian.
    import torch
    from scipy import ndimage as ndi

    from napari_segnet.postprocess import gaussian

    rng = np.random.default_rng(5)
    values = rng.random((*shape, 3), dtype=np.float32)
    kern = gaussian.gaussian_1d(2.0, "cpu")
    assert len(gaussian.gaussian_stages(2.0, "cpu")) == 1
    expected = values.astype(np.float64)
    for ax in range(len(shape)):
        expected = ndi.correlate1d(expected, kern.double().numpy(), axis=ax, mode="constant")
    x = torch.from_numpy(values.reshape(-1, 3))
    rest = int(np.prod(shape[1:]))
    got = torch.empty_like(x)
    for start in range(0, shape[0], rows):
        stop = min(start + rows, shape[0])
        got[start * rest : stop * rest] = gaussian.blur_rows(x, shape, [(kern, 1)], start, stop)
    np.testing.assert_allclose(got.numpy().reshape(values.shape), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(61, 47), (30, 40, 35)])
@pytest.mark.parametrize("sigma", [5.0, 12.0])
def test_wide_gaussian_in_stages_is_the_gaussian(shape, sigma):
    # A wide Gaussian runs as a narrow one, then a dilated one; in strips of rows
    # (and for the normalisation of ones) it must still be the zero-padded Gaussian,
    # here untruncated, normalised to unit sum.
    import torch
    from scipy import ndimage as ndi

    from napari_segnet.postprocess import gaussian

    stages = gaussian.gaussian_stages(sigma, "cpu")
    assert [d for _, d in stages][-1] > 1
    assert sum(len(k) for k, _ in stages) < len(gaussian.gaussian_1d(sigma, "cpu"))
    rng = np.random.default_rng(6)
    values = rng.random((*shape, 2), dtype=np.float32)
    t = np.arange(-6 * sigma, 6 * sigma + 1)
    gauss = np.exp(-(t**2) / (2 * sigma**2))
    gauss /= gauss.sum()
    expected, ones = values.astype(np.float64), np.ones(shape)
    for ax in range(len(shape)):
        expected = ndi.correlate1d(expected, gauss, axis=ax, mode="constant")
        ones = ndi.correlate1d(ones, gauss, axis=ax, mode="constant")
    scale = np.prod([float(k.sum()) for k, _ in stages]) ** len(shape)
    x = torch.from_numpy(values.reshape(-1, 2))
    rest = int(np.prod(shape[1:]))
    got = torch.empty_like(x)
    for start in range(0, shape[0], 7):
        stop = min(start + 7, shape[0])
        got[start * rest : stop * rest] = gaussian.blur_rows(x, shape, stages, start, stop)
    got = got.numpy().reshape(values.shape) / scale
    np.testing.assert_allclose(got, expected, atol=1e-4)
    got_ones = gaussian.blurred_ones(shape, stages).numpy().reshape(shape) / scale
    np.testing.assert_allclose(got_ones, ones, atol=1e-4)


def test_wide_gaussian_refinement_matches_scipy():
    # Gaussian kernel only, wide enough to run in stages on this image: the mean field
    # against one computed with scipy's exact (untruncated) separable Gaussian.
    from scipy import ndimage as ndi

    from napari_segnet.postprocess import gaussian

    sigma, shape = 12.0, (60, 80)
    assert len(gaussian.gaussian_stages(sigma, "cpu", max(shape))) == 2
    img, coarse, _gt = _scene(4, shape)
    got = ns.refine_crf(img, coarse, 4, sigma, 5.0, 80.0, 13.0, 0.0, device="cpu")
    t = np.arange(-6 * sigma, 6 * sigma + 1)
    gauss = np.exp(-(t**2) / (2 * sigma**2))

    def blur(a):
        for ax in (-2, -1):
            a = ndi.correlate1d(a, gauss, axis=ax, mode="constant")
        return a

    norm = 1 / np.sqrt(blur(np.ones(shape)))
    unary = np.log(np.clip(coarse.astype(np.float64), UNARY_CLIP, None))
    q = np.exp(unary) / np.exp(unary).sum(0)
    for _ in range(4):
        logits = unary + 5.0 * norm * blur(norm * q)
        q = np.exp(logits - logits.max(0))
        q /= q.sum(0)
    np.testing.assert_allclose(got, q, atol=1e-4)


def test_strips_and_chunks_do_not_change_the_refinement(monkeypatch):
    from napari_segnet.postprocess import crf, lattice

    img, coarse, _gt = _scene(3, (70, 90))
    whole = ns.refine_crf(img, coarse, device="cpu")
    monkeypatch.setattr(crf, "STRIP", 300)
    monkeypatch.setitem(lattice._CHUNK, "cpu", 1024)
    np.testing.assert_allclose(ns.refine_crf(img, coarse, device="cpu"), whole, atol=1e-5)


def test_large_compatibilities_stay_finite():
    # Large weights give large logits: the softmax must then subtract each pixel's
    # maximum instead of taking exp directly.
    img, prob = _tiny(4)
    params = (5, 3.0, 40.0, 5.0, 30.0, 200.0)
    got = ns.refine_crf(img, prob, *params, device="cpu")
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got.sum(0), 1, atol=1e-5)
    ref = brute_force_crf(img, prob, *params)
    assert (got.argmax(0) == ref.argmax(0)).mean() > 0.97


@pytest.mark.gpu
def test_cuda_matches_cpu_and_brute_force():
    img, prob = _tiny(2)
    params = (5, 3.0, 3.0, 5.0, 30.0, 10.0)
    ref = brute_force_crf(img, prob, *params)
    got = ns.refine_crf(img, prob, *params, device="cuda")
    assert np.abs(got - ref).mean() < 0.02
    img, coarse, _gt = _scene(2, (96, 128))
    cpu = ns.refine_crf(img, coarse, device="cpu")
    np.testing.assert_allclose(ns.refine_crf(img, coarse, device="cuda"), cpu, atol=1e-3)
