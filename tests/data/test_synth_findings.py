"""Finding generators: each plants a visible finding where anatomy puts it, with a matching mask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cxrdoll.constants import OBSERVATIONS
from cxrdoll.data.synth.anatomy import build_anatomy, sample_params
from cxrdoll.data.synth.findings import FINDINGS
from cxrdoll.data.synth.phantom import make_phantom, sample_findings

SIZE = 96


def _phantom(findings, seed=0):
    return make_phantom(np.random.default_rng(seed), SIZE, findings)


def test_one_generator_per_localisable_observation():
    assert list(FINDINGS) == list(OBSERVATIONS[1:])


@pytest.mark.parametrize("name", list(FINDINGS))
def test_each_finding_plants_its_own_mask_and_changes_the_image(name):
    for seed in range(3):
        normal = _phantom([], seed)
        ill = _phantom([name], seed)
        index = OBSERVATIONS.index(name)
        areas = ill.truth.reshape(14, -1).sum(axis=1)
        assert areas[index] >= 0.003 * SIZE * SIZE, f"{name}: mask too small ({areas[index]} px)"
        assert areas.sum() == areas[index]
        no_finding = int(name == "Support Devices")  # CheXpert's labeller: a device alone is not a finding
        assert ill.positive.tolist() == [no_finding] + [int(i == index) for i in range(1, 14)]
        assert normal.positive.tolist() == [1] + [0] * 13
        inside = ill.truth[index].astype(bool)
        diff = np.abs(ill.image.astype(float) - normal.image.astype(float))
        # Same anatomy, findings and exposure streams: the image changes inside the mask, hardly outside.
        assert diff[inside].mean() > 7, f"{name}: not visible inside its mask ({diff[inside].mean():.1f})"
        assert diff[~inside].mean() < diff[inside].mean() / 5, name
        # Nearly all of the change lies at the mask (2 px margin), or an explainer pointing at it scores as
        # wrong: an effusion once brightened the abdomen below it. A fracture displaces the rib beyond its
        # callus, and a widened mediastinum shifts the lung border beside it, by design.
        near = ndimage.binary_dilation(inside, iterations=2)
        if name not in ("Fracture", "Enlarged Cardiomediastinum"):
            assert diff[near].sum() >= 0.9 * diff.sum(), f"{name}: {diff[~near].sum() / diff.sum():.0%} of the change is outside"


def _centre(mask):
    ys, xs = np.nonzero(mask)
    return ys.mean() / mask.shape[0], xs.mean() / mask.shape[1]


def test_findings_sit_where_anatomy_puts_them():
    for seed in range(4):
        ph = _phantom(list(FINDINGS), seed)
        a = ph.anatomy
        lungs = a.lung["R"] | a.lung["L"]
        top, base = a.params.apex_y, max(a.params.cp_y.values())
        height = lambda m: (_centre(m)[0] - top) / (base - top)  # noqa: E731
        m = {name: ph.truth[OBSERVATIONS.index(name)].astype(bool) for name in FINDINGS}
        assert height(m["Pleural Effusion"]) > 0.6  # bases
        assert height(m["Pneumothorax"]) < 0.45  # apical
        for name in ("Pleural Effusion", "Pneumothorax", "Lung Opacity", "Edema", "Consolidation", "Pneumonia"):
            assert (m[name] & lungs).sum() >= 0.95 * m[name].sum(), name
        assert np.array_equal(m["Cardiomegaly"], a.heart)
        assert abs(_centre(m["Enlarged Cardiomediastinum"])[1] - a.params.cx) < 0.05
        # Pleural thickening and pneumothorax hug the lateral chest wall.
        for name in ("Pleural Other", "Pneumothorax"):
            x = _centre(m[name])[1] - a.params.cx
            assert abs(x) > 0.6 * a.params.lung_w, name


def _cardiothoracic_ratio(ph) -> float:
    cols = np.flatnonzero(ph.anatomy.heart.any(axis=0))
    return (cols[-1] - cols[0] + 1) / SIZE / (2 * ph.anatomy.params.lung_w)


def test_cardiomegaly_and_widened_mediastinum_enlarge_the_anatomy():
    for seed in range(6):
        normal, ill = _phantom([], seed), _phantom(["Cardiomegaly", "Enlarged Cardiomediastinum"], seed)
        # Radiologists call a cardiothoracic ratio above about 0.5 cardiomegaly.
        assert 0.3 < _cardiothoracic_ratio(normal) < 0.45 < _cardiothoracic_ratio(ill) < 0.7
        assert ill.anatomy.mediastinum.sum() > 1.6 * normal.anatomy.mediastinum.sum()
        assert (ill.anatomy.lung["R"] | ill.anatomy.lung["L"]).sum() < (normal.anatomy.lung["R"] | normal.anatomy.lung["L"]).sum()


def test_fracture_breaks_a_rib_inside_its_mask():
    ph = _phantom(["Fracture"], 1)
    p = ph.anatomy.params
    assert 2 <= len(p.rib_breaks) <= 3
    mask = ph.truth[OBSERVATIONS.index("Fracture")].astype(bool)
    for br in p.rib_breaks:
        rib = next(r for r in ph.anatomy.ribs if (r.side, r.index, r.kind) == (br.side, br.index, "posterior"))
        x = p.cx + (1 if br.side == "L" else -1) * br.u
        y = float(rib.y_at(br.u / p.lung_w))
        assert mask[int(y * SIZE), int(x * SIZE)]


def test_anatomy_varies_between_images_and_is_reproducible():
    a = build_anatomy(sample_params(np.random.default_rng(0)), 64)
    b = build_anatomy(sample_params(np.random.default_rng(1)), 64)
    again = build_anatomy(sample_params(np.random.default_rng(0)), 64)
    assert not np.array_equal(a.lung["R"], b.lung["R"])
    assert np.array_equal(a.lung["R"], again.lung["R"]) and np.array_equal(a.heart, again.heart)
    assert not (a.lung["R"] & a.lung["L"]).any() and not (a.lung["L"] & a.heart).any()
    assert np.array_equal(_phantom(["Edema"], 5).image, _phantom(["Edema"], 5).image)


def test_prevalence_suits_training():
    rng = np.random.default_rng(0)
    draws = [sample_findings(rng) for _ in range(2000)]
    normal = np.mean([not d for d in draws])
    assert 0.2 < normal < 0.3
    for name in FINDINGS:
        prevalence = np.mean([name in d for d in draws])
        assert 0.1 < prevalence < 0.35, (name, prevalence)
    assert np.mean([len(d) >= 2 for d in draws]) > 0.25  # several findings per image are common
    forced = [sample_findings(rng, force=("Pneumonia",)) for _ in range(50)]
    assert all("Pneumonia" in d for d in forced)
    # in observation order, the order make_phantom plants them in (not a set's, which varies between processes)
    assert all(d == [name for name in FINDINGS if name in d] for d in draws + forced)


def test_an_abnormal_image_has_a_finding_and_a_forced_one_is_any_of_those_given():
    """At a prevalence no finding reaches, an abnormal image still gets one (else it is a normal one
    counted as abnormal); lesion images force one of three infections, each of which must occur."""
    from cxrdoll.data.synth.phantom import INFECTION

    rng = np.random.default_rng(0)
    abnormal = [sample_findings(rng, normal_frac=0.0, prevalence=0.0) for _ in range(200)]
    assert all(len(d) == 1 for d in abnormal) and len({d[0] for d in abnormal}) == len(FINDINGS)
    forced = [sample_findings(rng, normal_frac=1.0, prevalence=0.0, force=INFECTION) for _ in range(90)]
    assert all(len(d) == 1 for d in forced) and {d[0] for d in forced} == set(INFECTION)


def test_unknown_finding_is_a_clear_error():
    with pytest.raises(KeyError, match="no generator for \\['Pneumonitis'\\]"):
        _phantom(["Pneumonitis"])


def test_a_string_of_findings_or_a_seed_for_the_generator_is_named():
    """A string was read letter by letter ("no generator for ['C', 'a', ...]") and an int seed failed
    with "'int' object has no attribute 'spawn'"."""
    with pytest.raises(TypeError, match=r"findings must be a list of observation names, got the string 'Cardiomegaly' "
                                        r"\(one finding: \['Cardiomegaly'\]\)"):
        _phantom("Cardiomegaly")
    with pytest.raises(TypeError, match=r"rng must be a numpy Generator \(np.random.default_rng\(seed\)\), got int"):
        make_phantom(0, SIZE, ["Cardiomegaly"])


@pytest.mark.parametrize("size", [64, 65, 97])
def test_half_resolution_lung_layers_sit_on_the_lungs_at_odd_sizes(size):
    """An odd side is padded to halve it; stretching the half grid back over `size` moved the layers up
    to a pixel towards the top left."""
    from cxrdoll.data.synth.render import render_base

    rng = np.random.default_rng(0)
    anatomy = build_anatomy(sample_params(rng), size)
    layer = render_base(anatomy, rng).lung_soft
    lungs = (anatomy.lung["R"] | anatomy.lung["L"]).astype(float)
    ys, xs = np.arange(size)[:, None], np.arange(size)[None, :]
    centre = lambda a: ((a * ys).sum() / a.sum(), (a * xs).sum() / a.sum())  # noqa: E731
    np.testing.assert_allclose(centre(layer), centre(lungs), atol=0.1)


def test_render_filters_match_scipy():
    """The fast filters against ndimage: bilinear upsampling with pixel centres aligned and edges held,
    Gaussian blur with edges repeated, the [1, 2, 1] / 4 smoothing (wrapped or held), and 2x2 means."""
    from cxrdoll.data.synth.render import _smooth3, _unit_std, blur, gaussian, halve, upsample

    rng = np.random.default_rng(0)
    a = rng.random((8, 8)).astype(np.float32)
    for size in (16, 13, 30):  # 16: the exact doubling path; the others interpolate
        ref = ndimage.zoom(a.astype(np.float64), size / 8, order=1, grid_mode=True, mode="nearest")
        np.testing.assert_allclose(upsample(a, size), ref, atol=1e-6)
    b = rng.random((20, 17)).astype(np.float32)
    for sigma, truncate in ((1.3, 2.5), (0.7, 2.0), (3.0, 2.5)):
        ref = ndimage.gaussian_filter(b.astype(np.float64), sigma, mode="nearest", truncate=truncate)
        np.testing.assert_allclose(gaussian(b, sigma, truncate), ref, atol=1e-6)
    k = np.array([0.25, 0.5, 0.25])
    ref = ndimage.correlate1d(ndimage.correlate1d(b, k, axis=0, mode="wrap"), k, axis=1, mode="nearest")
    np.testing.assert_allclose(_smooth3(b, (True, False)), ref, atol=1e-6)
    np.testing.assert_allclose(halve(b[:, :16]), b[:, :16].reshape(10, 2, 8, 2).mean(axis=(1, 3)), atol=1e-6)
    odd = b[:5, :7]  # an odd last row and column are repeated, as the edge-padding halve documents
    np.testing.assert_allclose(halve(odd), np.pad(odd, ((0, 1), (0, 1)), mode="edge").reshape(3, 2, 4, 2).mean(axis=(1, 3)),
                               atol=1e-6)
    assert np.std(_unit_std(rng.normal(3.0, 5.0, (12, 12)).astype(np.float32))) == pytest.approx(1.0, abs=1e-4)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 10:30] = True
    for sigma_px, tolerance in ((1.0, 1e-5), (2.0, 0.05), (6.0, 0.06)):  # wider blurs run on a halved copy
        ref = ndimage.gaussian_filter(mask.astype(np.float64), sigma_px, mode="nearest", truncate=2.5)
        assert np.abs(blur(mask, sigma_px / 64) - ref).max() < tolerance, sigma_px


def test_anatomy_grid_power_and_windows():
    from cxrdoll.data.synth.anatomy import grid, pixel_window, pow_11_32

    Y, X = grid(4)
    assert Y.ravel().tolist() == X.ravel().tolist() == [0.125, 0.375, 0.625, 0.875]  # pixel centres
    assert not Y.flags.writeable and not X.flags.writeable  # cached and shared by every image of that size
    x = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    np.testing.assert_allclose(pow_11_32(x.copy()), x.astype(np.float64) ** (11 / 32), atol=1e-6)
    rng = np.random.default_rng(1)
    n = 50
    Y, X = grid(n)
    for _ in range(300):  # every pixel centre inside an ellipse lies in its window
        x0, y0, rx, ry = rng.uniform(-0.1, 1.1), rng.uniform(-0.1, 1.1), rng.uniform(0.005, 0.2), rng.uniform(0.005, 0.2)
        inside = ((X - x0) / rx) ** 2 + ((Y - y0) / ry) ** 2 <= 1
        rows, cols = pixel_window(n, x0, y0, rx, ry)
        assert inside.sum() == inside[rows, cols].sum()


def test_the_heart_reaches_its_own_extent_to_each_side():
    """``heart_left`` is how far it reaches towards the image left of its centre, ``heart_right`` to the right."""
    size = 128
    for seed in range(3):
        p = sample_params(np.random.default_rng(seed))
        heart = build_anatomy(p, size).heart
        cols = np.flatnonzero(heart.any(axis=0))
        hx = (p.cx + p.heart_cx) * size
        assert abs((hx - cols[0]) - p.heart_left * size) < 2.5, seed
        assert abs((cols[-1] + 1 - hx) - p.heart_right * size) < 2.5, seed


def test_a_broken_rib_has_a_gap_and_its_far_part_is_stepped():
    from cxrdoll.data.synth.anatomy import RibBreak
    from cxrdoll.data.synth.render import _ribs

    size = 128
    p = sample_params(np.random.default_rng(2))
    whole = build_anatomy(p, size)
    i = next(k for k, r in enumerate(whole.ribs) if (r.side, r.index, r.kind) == ("L", 4, "posterior"))
    cols, centre, _, weight = _ribs(whole, np.random.default_rng(0))
    p.rib_breaks.append(RibBreak("L", 4, u=0.6 * p.lung_w, gap=0.015, step=0.02))
    broken = build_anatomy(p, size)
    _, centre_b, _, weight_b = _ribs(broken, np.random.default_rng(0))
    u = ((np.arange(size) + 0.5) / size - p.cx)  # lateral distance towards the patient's left (image right)
    beyond, gap = u > 0.6 * p.lung_w, np.abs(u - 0.6 * p.lung_w) < 0.015
    np.testing.assert_allclose(centre_b[i][beyond] - centre[i][beyond], 0.02, atol=1e-6)
    np.testing.assert_allclose(centre_b[i][~beyond], centre[i][~beyond])
    assert gap.sum() >= 3 and (weight_b[i][gap] == 0).all() and (weight[i][gap] > 0).all()


# Below these shares of the marked change inside the mask: a fracture displaces the rib beyond its callus,
# and a widened mediastinum shifts the lung border beside it, by design.
MARKED_CHANGE_IN_MASK = {"Fracture": 0.45, "Enlarged Cardiomediastinum": 0.6}


@pytest.mark.parametrize("name", list(FINDINGS))
def test_findings_add_density_a_pneumothorax_adds_air_and_the_mask_holds_the_marked_change(name):
    """Bright is dense: fluid, tissue, bone and devices brighten their mask, pneumothorax air darkens it.
    The pixels that change by more than a quarter of the largest change lie (mostly) inside the mask, or
    a mask drawn too small passes for a finding that is larger on the image."""
    index = OBSERVATIONS.index(name)
    shares = []
    for seed in range(4):
        normal, ill = _phantom([], seed), _phantom([name], seed)
        inside = ill.truth[index].astype(bool)
        change = ill.image.astype(float) - normal.image.astype(float)
        assert (change[inside].mean() < -10) if name == "Pneumothorax" else (change[inside].mean() > 10), seed
        marked = np.abs(change) > 0.25 * np.abs(change).max()
        shares.append((marked & inside).sum() / marked.sum())
    assert np.mean(shares) >= MARKED_CHANGE_IN_MASK.get(name, 0.87), shares


def test_a_forced_finding_is_an_abnormal_image_that_may_carry_others():
    rng = np.random.default_rng(0)
    draws = [sample_findings(rng, normal_frac=1.0, force=("Pneumonia",)) for _ in range(200)]
    assert all("Pneumonia" in d for d in draws)
    assert 0.5 < np.mean([len(d) > 1 for d in draws]) < 0.99  # others at their prevalence (0.22 each)


def test_the_lateral_view_follows_the_heart_size_and_diaphragm_height_of_its_patient():
    """The patient faces image left, so a bigger heart changes the front (left) half; a higher diaphragm
    brightens the band it now covers and leaves the upper chest as it was; a lower apex brightens the top."""
    import copy

    from cxrdoll.data.synth.lateral import make_lateral

    size = 96
    for seed in range(3):
        p = sample_params(np.random.default_rng(seed))
        base = make_lateral(np.random.default_rng(5), size, p).astype(float)
        big = copy.deepcopy(p)
        big.heart_scale = 1.5
        change = np.abs(make_lateral(np.random.default_rng(5), size, big).astype(float) - base)
        assert change.mean() > 2 and _centre(change > 10)[1] < 0.48, seed
        high = copy.deepcopy(p)
        high.cp_y = {side: y - 0.1 for side, y in p.cp_y.items()}
        change = make_lateral(np.random.default_rng(5), size, high).astype(float) - base
        assert np.abs(change[: size // 3]).max() == 0, seed
        band = slice(int((p.cp_y["R"] - 0.15) * size), int((p.cp_y["R"] - 0.05) * size))
        assert change[band].mean() > 10, seed
        # the diaphragm is highest in front: just above the posterior sulcus the front is abdomen, the back lung
        depth = 0.3 + 0.5 * (p.lung_w - 0.36)  # half the chest's front-to-back diameter
        rows = base[int((p.cp_y["R"] - 0.06) * size):int(p.cp_y["R"] * size)]
        front = rows[:, int((0.5 - depth + 0.08) * size):int((0.5 - depth + 0.2) * size)].mean()
        back = rows[:, int((0.5 + depth - 0.2) * size):int((0.5 + depth - 0.1) * size)].mean()
        assert front > back + 20, seed
        low = copy.deepcopy(p)
        low.apex_y = p.apex_y + 0.06  # the lung starts lower: the rows it left brighten
        change = make_lateral(np.random.default_rng(5), size, low).astype(float) - base
        assert change[int((p.apex_y + 0.03) * size):int((p.apex_y + 0.07) * size)].mean() > 10, seed


def test_lung_points_fall_inside_their_height_band_and_lung():
    from cxrdoll.data.synth.findings import _lung_point

    anatomy = build_anatomy(sample_params(np.random.default_rng(3)), 128)
    rng = np.random.default_rng(0)
    for side in ("R", "L"):
        top, base = anatomy.lung_bounds(side)
        for zone in ((0.1, 0.3), (0.45, 0.95)):
            for _ in range(40):
                x, y = _lung_point(anatomy, side, rng, zone)
                assert top + zone[0] * (base - top) - 1 / 128 <= y <= top + zone[1] * (base - top) + 1.5 / 128
                assert anatomy.lung[side][int(y * 128), int(x * 128)]


def test_lung_points_keep_their_margin_and_fall_back_to_the_lung_when_a_zone_or_margin_leaves_nothing():
    """A margin keeps nodules off both lung borders; a band below a small lung or a margin wider than
    the lung must still give a point in the lung, not fail drawing from nothing."""
    from cxrdoll.data.synth.anatomy import SIDE_SIGN, lung_borders
    from cxrdoll.data.synth.findings import _lung_point

    anatomy = build_anatomy(sample_params(np.random.default_rng(3)), 128)
    p, rng = anatomy.params, np.random.default_rng(1)
    for side in ("R", "L"):
        for _ in range(40):
            x, y = _lung_point(anatomy, side, rng, (0.1, 0.85), margin=0.04)
            med, lat = lung_borders(p, side, np.array([y]))
            u = SIDE_SIGN[side] * (x - p.cx)
            assert med[0] + 0.04 < u < lat[0] - 0.04
        for zone, margin in (((1.5, 2.0), 0.0), ((0.0, 1.0), 1.0)):
            x, y = _lung_point(anatomy, side, rng, zone, margin=margin)
            assert anatomy.lung[side][int(y * 128), int(x * 128)]


def test_lung_and_pleural_findings_are_masked_to_the_lungs_and_occur_on_both_sides():
    """Masks reaching past the lung would count an explainer's attention outside it as a hit; every
    unilateral finding comes on either side, and some effusions are bilateral."""
    inside = ("Lung Opacity", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
              "Pleural Effusion", "Pleural Other")
    sides: dict[str, set] = {name: set() for name in inside}
    for seed in range(12):
        ph = _phantom(list(inside), seed)
        a = ph.anatomy
        for name in inside:
            m = ph.truth[OBSERVATIONS.index(name)].astype(bool)
            assert not (m & ~(a.lung["R"] | a.lung["L"])).any(), (name, seed)
            sides[name].add(tuple(side for side in ("R", "L") if (m & a.lung[side]).any()))
    for name in ("Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Other", "Consolidation"):
        assert sides[name] == {("R",), ("L",)}, name
    assert {("R",), ("L",), ("R", "L")} <= sides["Pleural Effusion"]


def test_a_fracture_always_breaks_two_or_three_consecutive_ribs():
    for seed in range(10):
        breaks = _phantom(["Fracture"], seed).anatomy.params.rib_breaks
        assert len(breaks) in (2, 3) and len({br.side for br in breaks}) == 1
        assert [br.index for br in breaks] == list(range(breaks[0].index, breaks[0].index + len(breaks)))


def test_both_humeral_heads_brighten_their_own_upper_corner():
    """The shoulders are symmetric about the midline: a head drawn twice on one side (0.25 at its
    centre, about 0.13 at 0.06 from it) left the other side's corner as dark as bare soft tissue."""
    from cxrdoll.data.synth.render import render_base

    for seed in range(6):
        rng = np.random.default_rng(seed)
        anatomy = build_anatomy(sample_params(rng), SIZE)
        p = anatomy.params
        soft = render_base(anatomy, rng).soft
        row, d = int((p.apex_y - 0.01) * SIZE), p.lung_w + p.wall  # 0.06 inside each head's centre
        right, left = (soft[row, int((p.cx + sign * d) * SIZE)] for sign in (-1, 1))
        assert abs(right - left) < 0.05, seed


def test_anatomy_sides_heart_diaphragm_and_stomach():
    """The patient's right is the image's left: each hilum sits on its own lung's side, and each lung's
    own dome bounds the abdomen below it (the other side's dome put abdomen inside a lung). The heart
    rests on the diaphragm even when enlarged, lies inside the thorax, and the aortic knob bulges the
    left mediastinal border; about half the patients have a gastric bubble."""
    from cxrdoll.data.synth.anatomy import dome_curve, lung_borders

    for seed in range(6):
        p = sample_params(np.random.default_rng(seed))
        p.heart_scale = 1.5
        a = build_anatomy(p, SIZE)
        assert a.hilum("R")[0] < p.cx < a.hilum("L")[0]
        assert not (a.below_diaphragm & (a.lung["R"] | a.lung["L"])).any(), seed
        assert not (a.heart & ~a.thorax).any(), seed
        top_of_dome = np.maximum(dome_curve(p, "L", np.abs(a.X - p.cx)), dome_curve(p, "R", np.abs(a.X - p.cx)))
        assert not (a.heart & (a.Y >= top_of_dome + 0.01)).any(), seed
        knob = np.array([p.carina_y - 0.04])
        bulge = lung_borders(p, "L", knob)[0] - lung_borders(p, "R", knob)[0]
        assert bulge[0] == pytest.approx(p.aortic_knob, rel=1e-3)
    bubbles = [sample_params(np.random.default_rng(seed)).gastric_bubble for seed in range(40)]
    assert 10 < sum(b > 0 for b in bubbles) < 30 and all(b == 0 or 0.02 <= b <= 0.04 for b in bubbles)
