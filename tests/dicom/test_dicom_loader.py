"""cxrdoll.dicom loader on the real shared DICOMs and on hand-made edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRBigEndian

from cxrdoll.dicom.loader import DicomInputError, dataset_to_image, load_cxr_dicom, read_dataset
from tests.dicom.conftest import find
from tests.dicom.synthetic_dicom import make_cr, save

SIIM_LOSSLESS = ("explicitLE", "implicitLE", "deflatedLE", "_rle_", "j2k-lossless", "jpeg-lossless-sv1", "jpegls-lossless")
BARRE_LOSSLESS = ("explicitLE-part10", "_rle_", "j2k-lossless", "jpeg-lossless-sv1", "jpegls-lossless")


def test_every_shared_file_decodes_to_the_convention(decoded, dicom_index):
    assert len(decoded) == 20
    for name, image in decoded.items():
        row = dicom_index[name]
        assert image.array.shape == (1, int(row["rows"]), int(row["cols"])), name
        assert image.array.dtype == np.float32
        assert image.array.min() >= 0.0 and image.array.max() <= 1.0, name
        assert image.array.std() > 0.1, f"{name}: nearly constant image"
        assert image.meta["modality"] == row["modality"]
        assert image.meta["original_shape"] == [int(row["rows"]), int(row["cols"])], name
        assert image.meta["bits_stored"] == int(row["bits_stored"]), name


def test_lungs_are_darker_than_the_mediastinum_in_every_file(decoded):
    """MONOCHROME1, MONOCHROME2 and the inverted-looking DX all end up with lungs dark."""
    for name, image in decoded.items():
        a = image.array[0]
        h, w = a.shape
        rows = slice(int(0.3 * h), int(0.6 * h))
        lungs = np.r_[a[rows, int(0.2 * w):int(0.35 * w)].ravel(), a[rows, int(0.65 * w):int(0.8 * w)].ravel()]
        mediastinum = a[rows, int(0.46 * w):int(0.54 * w)]
        assert lungs.mean() < mediastinum.mean() - 0.15, name


def test_lossless_transcodes_give_identical_arrays(decoded):
    siim = decoded[find(decoded, "original/", "SIIM")].array
    for fragment in SIIM_LOSSLESS:
        np.testing.assert_array_equal(decoded[find(decoded, "derived/", "SIIM", fragment)].array, siim, err_msg=fragment)
    barre = decoded[find(decoded, "original/", "Barre", "nometa")].array
    for fragment in BARRE_LOSSLESS:
        name = find(decoded, "derived/", "mono1_10bit", fragment)
        np.testing.assert_array_equal(decoded[name].array, barre, err_msg=fragment)


def test_inverted_pair_gives_equal_arrays(decoded, dicom_dir):
    mono1 = find(decoded, "mono1_10bit_explicitLE-part10")
    mono2 = find(decoded, "INVERTED")
    # Without VOI the MONOCHROME1 inversion makes the pair identical.
    raw1 = load_cxr_dicom(dicom_dir / mono1, voi="none").array
    raw2 = load_cxr_dicom(dicom_dir / mono2, voi="none").array
    np.testing.assert_array_equal(raw1, raw2)
    assert np.abs((1.0 - raw1) - raw2).max() > 0.5  # not inverting would be caught
    # With their windows (550/1024 and the curator's 473 = 1023 - 550, one grey level off the
    # exact mirror 474) they agree to within that one level of 1023.
    diff = np.abs(decoded[mono1].array - decoded[mono2].array).max()
    assert diff <= 1.0 / 1023 + 1e-6
    assert decoded[mono1].meta["voi"] == "window 550/1024"


def test_dx_window_outside_the_pixel_range_falls_back_to_minmax(decoded, dicom_dir):
    name = find(decoded, "dx_chest", "j2k-lossless")
    meta = decoded[name].meta
    assert meta["voi"] == "minmax (window 2725/5310 leaves 0.0% of pixels unclipped)"
    assert meta["inverted_for_intensity_sign"] is True
    assert meta["pixel_spacing"] == [0.4, 0.4] and meta["pixel_spacing_source"] == "ImagerPixelSpacing"
    assert meta["view"] == "UNKNOWN"
    # Forcing the file's window saturates every pixel (the reason for the fallback): nothing is left to see.
    path = dicom_dir / find(decoded, "dx_chest", "explicitLE")
    with pytest.raises(DicomInputError, match=rf"^{path}: VOI \(window 2725/5310\) maps every pixel to 1: nothing is visible$"):
        load_cxr_dicom(path, voi="window")


@pytest.mark.parametrize("pixels, slope, expected", [
    (np.full((8, 6), 700, np.uint16), "1", "every pixel has the value 700 after rescale: a blank image"),
    (np.arange(48, dtype=np.uint16).reshape(8, 6), "0", "every pixel has the value -5 after rescale: a blank image"),
])
def test_a_blank_image_is_refused_naming_the_file(pixels, slope, expected):
    """A failed exposure or export decoded to an all-black image that passed as a radiograph."""
    ds = make_cr(pixels, RescaleSlope=slope, RescaleIntercept="-5" if slope == "0" else "0")
    with pytest.raises(DicomInputError, match=rf"^x.dcm: {expected}$"):
        dataset_to_image(ds, source="x.dcm")
    one_brighter = pixels.copy()
    one_brighter[3, 2] += 1
    assert dataset_to_image(make_cr(one_brighter)).array.max() == 1.0  # one pixel's difference is an image


def test_pixel_spacing_metadata(decoded):
    assert decoded[find(decoded, "original/", "SIIM")].meta["pixel_spacing"] == pytest.approx([0.168, 0.168])
    assert decoded[find(decoded, "original/", "SIIM")].meta["pixel_spacing_source"] == "PixelSpacing"
    # NEMA RG1 stores PixelSpacing 0\0: unknown, not zero.
    assert decoded[find(decoded, "original/", "j2k-lossy")].meta["pixel_spacing"] is None


def test_rescale_then_window_in_output_units():
    pixels = np.array([[0, 100, 200, 300]], dtype=np.uint16)
    # Modality LUT first (2x - 100 gives -100, 100, 300, 500), then the window on those values.
    ds = make_cr(pixels, RescaleSlope="2", RescaleIntercept="-100", WindowCenter="200", WindowWidth="401")
    out = dataset_to_image(ds).array[0, 0]
    expected = np.clip((np.array([-100, 100, 300, 500]) - 199.5) / 400 + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_voi_lut_sequence_is_preferred_to_the_window():
    pixels = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.LUTData = [0, 255, 51, 102]  # deliberately non-monotonic so only the LUT explains it
    ds = make_cr(pixels, WindowCenter="1", WindowWidth="2", VOILUTSequence=[item])
    image = dataset_to_image(ds)
    np.testing.assert_allclose(image.array[0, 0], [0.0, 1.0, 0.2, 0.4], atol=1e-6)
    assert image.meta["voi"] == "lut"
    assert dataset_to_image(ds, voi="window").meta["voi"] == "window 1/2"


def test_an_8_bit_voi_lut_longer_than_256_entries_maps_every_value():
    # PS3.3 allows 8-bit entries for a 12-bit input; pydicom 3.0's apply_voi wraps inputs past 255.
    pixels = np.array([[0, 255, 256, 1000, 2048, 4095]], dtype=np.uint16)
    entries = np.arange(4096) // 16
    as_list, as_words = Dataset(), Dataset()
    for item in (as_list, as_words):
        item.LUTDescriptor = [4096, 0, 8]
    as_list.LUTData = entries.tolist()
    as_words.add_new(0x00283006, "OW", entries.astype("<u2").tobytes())  # OW: 16-bit words, file byte order
    for item in (as_list, as_words):
        out = dataset_to_image(make_cr(pixels, VOILUTSequence=[item])).array[0, 0]
        np.testing.assert_allclose(out, (pixels[0] // 16) / 255, atol=1e-6)


def test_a_voi_lut_shorter_than_its_descriptor_or_of_impossible_depth_names_the_file():
    item = Dataset()
    item.LUTDescriptor = [1024, 0, 16]
    item.LUTData = list(range(100))
    with pytest.raises(DicomInputError, match=r"^x.dcm: VOI LUT Data holds 100 entries, its LUT Descriptor says 1024$"):
        dataset_to_image(make_cr(VOILUTSequence=[item]), source="x.dcm")
    item.LUTDescriptor = [100, 0, 0]  # dividing by 2**0 - 1 gave NaN pixels
    with pytest.raises(DicomInputError, match=r"^x.dcm: VOI LUT Descriptor gives 0 bits per entry; PS3.3 allows 8 to 16$"):
        dataset_to_image(make_cr(VOILUTSequence=[item]), source="x.dcm")


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # 'nan', 'linear_exact': the values under test
def test_a_window_its_function_cannot_use_falls_back_or_names_the_file():
    pixels = np.array([[0, 10, 20, 40]], dtype=np.uint16)
    narrow = make_cr(pixels, WindowCenter="10", WindowWidth="0.5")  # LINEAR needs a width >= 1
    assert dataset_to_image(narrow).meta["voi"] == "minmax"
    with pytest.raises(DicomInputError, match=r"^x.dcm: voi='window' but the file has no usable Window Center/Width"):
        dataset_to_image(narrow, voi="window", source="x.dcm")
    exact = make_cr(pixels, WindowCenter="10", WindowWidth="0.5", VOILUTFunction="LINEAR_EXACT")
    np.testing.assert_allclose(dataset_to_image(exact).array[0, 0], [0, 0.5, 1, 1])
    misspelt = make_cr(pixels, WindowCenter="10", WindowWidth="0.5", VOILUTFunction="LINEAR-EXACT")  # not PS3.3's
    assert dataset_to_image(misspelt).meta["voi"] == "minmax"  # read as LINEAR, too narrow for it: no window
    lower_case = make_cr(pixels, WindowCenter="10", WindowWidth="0.5", VOILUTFunction="linear_exact")
    np.testing.assert_allclose(dataset_to_image(lower_case).array[0, 0], [0, 0.5, 1, 1])
    # LINEAR_EXACT and SIGMOID need a width > 0 (0 divided by zero into NaN pixels); no window has a NaN center
    for center, width, function in (("10", "0", "LINEAR_EXACT"), ("10", "0", "SIGMOID"), ("nan", "10", "LINEAR")):
        unusable = make_cr(pixels, WindowCenter=center, WindowWidth=width, VOILUTFunction=function)
        with pytest.raises(DicomInputError, match=r"^x.dcm: voi='window' but the file has no usable Window"):
            dataset_to_image(unusable, voi="window", source="x.dcm")


@pytest.mark.parametrize("keyword, value", [("RescaleSlope", b"ab\\c"), ("WindowCenter", b"ab"),
                                            ("PixelSpacing", b"0.2"), ("PixelSpacing", b"ab\\c"),
                                            ("PixelSpacing", b"0.2\\0"), ("PixelSpacing", b"0.2\\inf")])
def test_malformed_header_values_are_unknown_or_name_the_file(tmp_path, keyword, value):
    ds = make_cr(WindowCenter="500", WindowWidth="1000", RescaleSlope="1", RescaleIntercept="0")
    tag = Tag(keyword_dict[keyword])
    ds[tag] = RawDataElement(tag, "DS", len(value), value, 0, False, True)
    path = save(ds, tmp_path / "case.dcm")
    if keyword == "RescaleSlope":  # no number to rescale with: the file cannot be read
        with pytest.raises(DicomInputError, match=rf"^{path}: modality LUT or rescale could not be applied"):
            load_cxr_dicom(path)
        return
    image = load_cxr_dicom(path)
    if keyword == "WindowCenter":
        assert image.meta["voi"] == "minmax"
    else:
        assert image.meta["pixel_spacing"] is None and image.meta["pixel_spacing_source"] == "none"


def test_monochrome1_with_intensity_sign_and_opt_out():
    pixels = np.array([[0, 10]], dtype=np.uint16)
    plain = dataset_to_image(make_cr(pixels, PhotometricInterpretation="MONOCHROME1")).array[0, 0]
    np.testing.assert_allclose(plain, [1.0, 0.0])
    signed = make_cr(pixels, PixelIntensityRelationshipSign=1)
    np.testing.assert_allclose(dataset_to_image(signed).array[0, 0], [1.0, 0.0])
    np.testing.assert_allclose(dataset_to_image(signed, use_intensity_sign=False).array[0, 0], [0.0, 1.0])


@pytest.mark.parametrize(
    "attributes, problem",
    [
        ({"Modality": "CT"}, "modality 'CT' is not CR or DX"),
        ({"Modality": None}, "modality '(missing)' is not CR or DX"),
        ({"PixelData": None}, "has no pixel data"),
        ({"NumberOfFrames": 2}, "is multi-frame (2 frames); expected a single-frame radiograph"),
        ({"PhotometricInterpretation": "RGB", "SamplesPerPixel": 3},
         "is colour (PhotometricInterpretation 'RGB', SamplesPerPixel 3); expected MONOCHROME1/2 greyscale"),
        ({"SamplesPerPixel": 3},  # three samples a pixel, whatever the Photometric Interpretation claims
         "is colour (PhotometricInterpretation 'MONOCHROME2', SamplesPerPixel 3); expected MONOCHROME1/2 greyscale"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.66.4"}, "is a DICOM SEG object, not a radiograph"),
        ({"Modality": "DX", "PresentationIntentType": "FOR PROCESSING"},
         "is a 'For Processing' image (detector data not meant for display); expected 'For Presentation'"),
        ({"Modality": "DX", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1.1"},
         "is a 'For Processing' image (detector data not meant for display); expected 'For Presentation'"),
    ],
)
def test_not_a_cxr_errors_name_the_file(tmp_path, attributes, problem):
    path = save(make_cr(**attributes), tmp_path / "case.dcm")
    with pytest.raises(DicomInputError) as info:
        load_cxr_dicom(path)
    assert str(info.value) == f"{path}: {problem}"
    assert info.value.problem == problem


def test_non_dicom_and_bad_voi_mode(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image\n" * 50)
    with pytest.raises(DicomInputError, match=r"notes.txt: not a DICOM file \(no SOP Class UID, Modality or Pixel Data\)"):
        read_dataset(junk)
    with pytest.raises(ValueError, match=r"voi must be one of \('auto', 'lut', 'window', 'none'\), got 'bright'"):
        dataset_to_image(make_cr(), voi="bright")
    with pytest.raises(DicomInputError, match="voi='lut' but the file has no VOI LUT Sequence"):
        dataset_to_image(make_cr(), voi="lut", source="x.dcm")


def test_minmax_without_a_window_is_not_set_by_a_few_extreme_pixels():
    """As for PNG: 5 hot pixels at 65535 and 5 dead at 0 in 10000 are clipped; ranks 9 and 9990
    (0.1 % and 99.9 %) fall on the body's own extremes, 1000 and 3000."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(1001, 3000, size=10000).astype(np.uint16)
    pixels[:20], pixels[20:40], pixels[40:45], pixels[45:50] = 1000, 3000, 0, 65535
    pixels = rng.permutation(pixels).reshape(100, 100)
    image = dataset_to_image(make_cr(pixels))
    assert image.meta["voi"] == "minmax"
    np.testing.assert_allclose(image.array[0], np.clip((pixels - 1000.0) / 2000.0, 0, 1), atol=1e-6)


def test_sigmoid_and_width_one_windows_follow_ps3_3():
    """C.11.2.1.3.1: y = 1 / (1 + exp(-4 (x - c) / w)); C.11.2.1.2.1 with w = 1: x <= c - 0.5 is
    the minimum, above it the maximum (a width of 1 is usable; "auto" still prefers min-max to its
    all-clipped binary image)."""
    pixels = np.array([[0, 10, 20, 40]], dtype=np.uint16)
    sigmoid = dataset_to_image(make_cr(pixels, WindowCenter="20", WindowWidth="40", VOILUTFunction="SIGMOID"))
    expected = [1 / (1 + np.exp(2.0)), 1 / (1 + np.exp(1.0)), 0.5, 1 / (1 + np.exp(-2.0))]
    np.testing.assert_allclose(sigmoid.array[0, 0], expected, atol=1e-6)
    step = dataset_to_image(make_cr(pixels, WindowCenter="10.5", WindowWidth="1"), voi="window")
    assert step.meta["voi"] == "window 10.5/1"
    np.testing.assert_array_equal(step.array[0, 0], [0, 0, 1, 1])  # 10 == c - 0.5 stays at the minimum


def test_voi_lut_first_mapped_value_and_a_descriptor_of_zero_entries():
    """PS3.3 C.11.2.1.1: the descriptor's second value is the first input mapped (below it the first
    entry, past the end the last), and 0 entries means 65536."""
    item = Dataset()
    item.LUTDescriptor = [4, 100, 8]
    item.LUTData = [0, 51, 102, 255]
    pixels = np.array([[0, 99, 100, 101, 102, 103, 104, 500]], dtype=np.uint16)
    out = dataset_to_image(make_cr(pixels, VOILUTSequence=[item])).array[0, 0]
    np.testing.assert_allclose(out, [0, 0, 0, 0.2, 0.4, 1, 1, 1], atol=1e-6)
    full = Dataset()
    full.LUTDescriptor = [0, 0, 16]
    full.LUTData = (65535 - np.arange(65536)).tolist()  # reversed: value v -> (65535 - v) / 65535
    pixels = np.array([[0, 255, 256, 40000, 65535]], dtype=np.uint16)
    out = dataset_to_image(make_cr(pixels, VOILUTSequence=[full])).array[0, 0]
    np.testing.assert_allclose(out, (65535.0 - pixels[0]) / 65535, atol=1e-6)


def test_ow_lut_data_in_a_big_endian_dataset_is_read_big_endian():
    pixels = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    ds = make_cr(pixels)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.PixelData = pixels.astype(">u2").tobytes()
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]
    item.add_new(0x00283006, "OW", np.array([0, 65535, 256, 1], dtype=">u2").tobytes())
    ds.VOILUTSequence = [item]
    np.testing.assert_allclose(dataset_to_image(ds).array[0, 0], [0, 1, 256 / 65535, 1 / 65535], atol=1e-7)


def test_monochrome1_intensity_sign_minus_one_flips_and_plus_one_does_not():
    """Sign -1: higher values mean less beam (bone high), which MONOCHROME1 shows dark: flipped.
    Sign +1 on MONOCHROME1 shows bone bright already: left as plain MONOCHROME1 inversion."""
    pixels = np.array([[0, 10]], dtype=np.uint16)
    minus = dataset_to_image(make_cr(pixels, PhotometricInterpretation="MONOCHROME1", PixelIntensityRelationshipSign=-1))
    np.testing.assert_allclose(minus.array[0, 0], [0.0, 1.0])
    assert minus.meta["inverted_for_intensity_sign"] is True
    plus = dataset_to_image(make_cr(pixels, PhotometricInterpretation="MONOCHROME1", PixelIntensityRelationshipSign=1))
    np.testing.assert_allclose(plus.array[0, 0], [1.0, 0.0])
    assert plus.meta["inverted_for_intensity_sign"] is False
    minus2 = dataset_to_image(make_cr(pixels, PixelIntensityRelationshipSign=-1))  # MONOCHROME2, sign -1: as is
    np.testing.assert_allclose(minus2.array[0, 0], [0.0, 1.0])


def test_pixel_spacing_is_preferred_to_imager_pixel_spacing():
    """PixelSpacing (calibrated at the patient) wins over the detector's ImagerPixelSpacing; the
    imager's is used only when PixelSpacing is absent or unusable, in (row, column) order."""
    both = dataset_to_image(make_cr(ImagerPixelSpacing=[0.3, 0.35]))
    assert both.meta["pixel_spacing"] == [0.2, 0.25] and both.meta["pixel_spacing_source"] == "PixelSpacing"
    imager = dataset_to_image(make_cr(PixelSpacing=[0, 0], ImagerPixelSpacing=[0.3, 0.35]))
    assert imager.meta["pixel_spacing"] == [0.3, 0.35] and imager.meta["pixel_spacing_source"] == "ImagerPixelSpacing"


@pytest.mark.parametrize("implicit_vr, little_endian, syntax", [
    (True, True, "1.2.840.10008.1.2"), (False, True, "1.2.840.10008.1.2.1"), (False, False, "1.2.840.10008.1.2.2"),
])
def test_a_file_without_file_meta_is_read_in_the_encoding_it_was_written_in(tmp_path, implicit_vr, little_endian, syntax):
    """Without File Meta the transfer syntax is the one pydicom detected, so that big-endian
    pixels are not read as little-endian (value 1 would become 256)."""
    pixels = np.array([[1, 2, 300, 4000]], dtype=np.uint16)
    ds = make_cr(pixels)
    del ds.file_meta
    ds.PixelData = pixels.astype("<u2" if little_endian else ">u2").tobytes()
    ds.save_as(tmp_path / "bare.dcm", implicit_vr=implicit_vr, little_endian=little_endian)
    read = read_dataset(tmp_path / "bare.dcm")
    assert read.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(load_cxr_dicom(tmp_path / "bare.dcm", voi="none").array,
                                  dataset_to_image(make_cr(pixels), voi="none").array)


def test_auto_keeps_a_window_leaving_one_percent_unclipped_and_drops_one_that_clips_all():
    """MIN_UNCLIPPED_FRACTION: a window is kept when at least 1 % of the pixels fall strictly
    inside it; pixels clipped to black count as clipped as much as those clipped to white."""
    pixels = np.zeros((10, 10), np.uint16)
    pixels[5:] = 100
    pixels[0, 0] = 50  # the one pixel in 100 that the window 50/10 leaves between 0 and 1
    kept = dataset_to_image(make_cr(pixels, WindowCenter="50", WindowWidth="10", VOILUTFunction="LINEAR_EXACT"))
    assert kept.meta["voi"] == "window 50/10"
    np.testing.assert_array_equal(kept.array[0], np.where(pixels == 50, 0.5, pixels / 100))
    black = dataset_to_image(make_cr(pixels, WindowCenter="1000", WindowWidth="10", VOILUTFunction="LINEAR_EXACT"))
    assert black.meta["voi"] == "minmax (window 1000/10 leaves 0.0% of pixels unclipped)"


def test_the_first_of_several_windows_and_voi_luts_is_used_and_an_empty_lut_sequence_is_none():
    """PS3.3 C.11.2.1: the first Window Center/Width pair and the first VOI LUT are the defaults;
    an empty VOI LUT Sequence holds no LUT, so the window applies."""
    pixels = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    windows = make_cr(pixels, WindowCenter=["2", "100"], WindowWidth=["4", "50"])
    image = dataset_to_image(windows)
    assert image.meta["voi"] == "window 2/4"
    np.testing.assert_allclose(image.array[0, 0], [0, 1 / 3, 2 / 3, 1], atol=1e-6)  # (x - 1.5) / 3 + 0.5
    first, second = Dataset(), Dataset()
    first.LUTDescriptor = second.LUTDescriptor = [4, 0, 8]
    first.LUTData, second.LUTData = [0, 255, 51, 102], [255, 0, 0, 0]
    np.testing.assert_allclose(dataset_to_image(make_cr(pixels, VOILUTSequence=[first, second])).array[0, 0],
                               [0.0, 1.0, 0.2, 0.4], atol=1e-6)
    assert dataset_to_image(make_cr(pixels, VOILUTSequence=[], WindowCenter="2", WindowWidth="4")).meta["voi"] == "window 2/4"


def test_a_rescaled_value_between_two_voi_lut_inputs_takes_the_nearest():
    """Slope 0.75 gives 0, 0.75, 2.25, 3: the LUT is read at the nearest inputs 0, 1, 2, 3 (truncating
    would read 0, 0, 2, 3)."""
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.LUTData = [0, 51, 102, 255]
    pixels = np.array([[0, 1, 3, 4]], dtype=np.uint16)
    out = dataset_to_image(make_cr(pixels, RescaleSlope="0.75", RescaleIntercept="0", VOILUTSequence=[item])).array[0, 0]
    np.testing.assert_allclose(out, [0, 0.2, 0.4, 1], atol=1e-6)
