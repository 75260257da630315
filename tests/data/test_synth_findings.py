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
