"""DICOM SEG writer: round trips through highdicom and pydicom, codes, and dciodvfy with zero errors."""

from __future__ import annotations

import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest

import cxrdoll
from cxrdoll.constants import OBSERVATIONS
from cxrdoll.dicom.loader import read_dataset
from cxrdoll.dicom.seg import NOMINAL_SLICE_THICKNESS_MM, build_seg, write_seg
from cxrdoll.dicom.seg_codes import PRIVATE_SCHEME, segment_meaning
from cxrdoll.errors import OutputWriteError
from tests.dicom.conftest import find
from tests.dicom.dciodvfy import dciodvfy_errors
from tests.dicom.synthetic_dicom import make_cr

NAMES = ["left lung", "heart", "right clavicle", "Pleural Effusion"]
# Sources that stress the writer: no File Meta and no spacing (Barre), zero PixelSpacing (RG1),
# non-ASCII text without a character set, bad Patient's Age and a de-identification flag (DX).
SOURCES = (("original/", "nometa"), ("derived/", "RG1-from-J2KI"), ("derived/", "dx_chest", "explicitLE"),
           ("original/", "SIIM"))


def _masks(rows: int, cols: int) -> np.ndarray:
    masks = np.zeros((len(NAMES), rows, cols), dtype=bool)
    masks[0, rows // 4: rows // 2, cols // 8: cols // 3] = True
    masks[1, rows // 2: 3 * rows // 4, cols // 3: 2 * cols // 3] = True
    masks[2, 1:4, :] = True
    return masks  # the last segment stays empty on purpose


@pytest.fixture(scope="module")
def written(dicom_dir, dicom_index, tmp_path_factory):
    """SEG files for the stress sources: {name: (source dataset, masks, path)}."""
    out = tmp_path_factory.mktemp("seg")
    cases = {}
    for i, fragments in enumerate(SOURCES):
        name = find(dicom_index, *fragments)
        source = read_dataset(dicom_dir / name)
        masks = _masks(source.Rows, source.Columns)
        write_seg(out / f"seg{i}.dcm", source, masks, NAMES)
        cases[name] = (source, masks, out / f"seg{i}.dcm")
    return cases


def test_round_trip_highdicom(written):
    for name, (source, masks, path) in written.items():
        seg = hd.seg.segread(path)
        assert seg.number_of_segments == len(NAMES)
        pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1, 2, 3, 4])
        np.testing.assert_array_equal(np.moveaxis(pixels[0], -1, 0).astype(bool), masks, err_msg=name)
        assert [d.segment_label for d in seg.SegmentSequence] == NAMES
        assert seg.get_segment_description(1).segmented_property_type == hd.sr.CodedConcept("39607008", "SCT", "Lung")


def test_round_trip_pydicom_references_and_codes(written):
    for name, (source, masks, path) in written.items():
        ds = pydicom.dcmread(path)
        assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        np.testing.assert_array_equal(ds.pixel_array.astype(bool), masks, err_msg=name)
        referenced = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
        assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert referenced.ReferencedSOPClassUID == source.SOPClassUID
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        assert float(measures.SliceThickness) == NOMINAL_SLICE_THICKNESS_MM
        lung = ds.SegmentSequence[0]
        assert lung.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"  # anatomical structure
        modifier = lung.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
        assert (modifier.CodeValue, modifier.CodeMeaning) == ("7771000", "Left")
        effusion = ds.SegmentSequence[3].SegmentedPropertyTypeCodeSequence[0]
        assert (effusion.CodeValue, effusion.CodingSchemeDesignator) == ("60046008", "SCT")
        assert ds.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"


def test_pixel_spacing_comes_from_the_source_or_defaults(written):
    spacings = {}
    for name, (_, _, path) in written.items():
        measures = pydicom.dcmread(path).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        spacings[name] = [float(v) for v in measures.PixelSpacing]
    assert spacings[find(spacings, "dx_chest")] == [0.4, 0.4]
    assert spacings[find(spacings, "SIIM")] == pytest.approx([0.168, 0.168])
    assert spacings[find(spacings, "nometa")] == [1.0, 1.0]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_dciodvfy_reports_no_errors(written):
    for name, (_, _, path) in written.items():
        assert dciodvfy_errors(path) == [], name


def test_every_localisable_observation_and_structure_has_a_code():
    for observation in OBSERVATIONS[1:]:
        meaning = segment_meaning(observation)
        assert meaning.type.scheme_designator in ("SCT", PRIVATE_SCHEME)
    assert segment_meaning(" Left_Lung ").laterality.value == "7771000"
    assert segment_meaning("infection").type.value == "840539006"
    with pytest.raises(KeyError, match=r"no DICOM code for segment 'spleen'; known segments: \[.*'right lung'.*'Cardiomegaly'"):
        segment_meaning("spleen")


def test_shape_errors():
    source = make_cr()
    with pytest.raises(ValueError, match=r"masks must be \(N, H, W\) with N = 2 segment names, got shape \(1, 64, 48\)"):
        build_seg(source, np.zeros((1, 64, 48), bool), ["heart", "lung"])
    with pytest.raises(ValueError, match=r"masks must be \(N, H, W\) with N = 1 segment names, got shape \(1, 1, 64, 48\)"):
        build_seg(source, np.zeros((1, 1, 64, 48), bool), ["heart"])
    with pytest.raises(ValueError, match=r"mask size \(32, 48\) differs from the source image \(64, 48\)"):
        build_seg(source, np.zeros((1, 32, 48), bool), ["heart"])


def test_probabilities_and_a_source_that_is_no_dataset_are_refused(tmp_path):
    """A float probability map was written as inside wherever it was not exactly 0 (all of a sigmoid
    output); a path or CXRImage as source failed with "'str' object has no attribute 'Rows'"."""
    source = make_cr()
    probs = np.full((1, 64, 48), 0.2, np.float32)
    with pytest.raises(ValueError, match=r"masks are float32 with values other than 0 and 1 \(\[0.2, 0.2\]\).*probs > 0.5"):
        write_seg(tmp_path / "p.dcm", source, probs, ["heart"])
    assert not (tmp_path / "p.dcm").exists()
    with pytest.raises(TypeError, match=r"source must be the source image's pydicom Dataset .*got str"):
        build_seg("image.dcm", np.zeros((1, 64, 48), bool), ["heart"])
    with pytest.raises(TypeError, match=r"names must be a list of segment names, got the string 'heart'"):
        build_seg(source, np.zeros((1, 64, 48), bool), "heart")
    # Masks of 0 and 1 in any dtype, and 0/255 integers, stay accepted.
    for masks in (np.ones((1, 64, 48), np.float32), np.full((1, 64, 48), 255, np.uint8)):
        assert build_seg(source, masks, ["heart"]).pixel_array.all()


# SNOMED CT concept ids (category, type, laterality) as PS3.16 codes them; "P:" marks the private scheme.
EXPECTED_CODES = {
    "lung": ("91723000", "39607008", None), "left lung": ("91723000", "39607008", "7771000"),
    "right lung": ("91723000", "39607008", "24028007"), "heart": ("91723000", "80891009", None),
    "clavicle": ("91723000", "51299004", None), "left clavicle": ("91723000", "51299004", "7771000"),
    "right clavicle": ("91723000", "51299004", "24028007"), "infection": ("49755003", "840539006", None),
    "Enlarged Cardiomediastinum": ("404684003", "P:ECM", None),
    "Cardiomegaly": ("404684003", "287272002", None),  # PS3.16 CID 12248's code for Cardiomegaly
    "Lung Opacity": ("404684003", "P:LOPAC", None), "Lung Lesion": ("404684003", "P:LLES", None),
    "Edema": ("404684003", "19242006", None), "Consolidation": ("404684003", "P:CONS", None),
    "Pneumonia": ("404684003", "233604007", None), "Atelectasis": ("404684003", "P:ATEL", None),
    "Pneumothorax": ("404684003", "36118008", None), "Pleural Effusion": ("404684003", "60046008", None),
    "Pleural Other": ("404684003", "P:PLOTH", None), "Fracture": ("404684003", "P:FRACT", None),
    "Support Devices": ("260787004", "P:DEVICE", None),
}


def test_each_segment_name_has_its_own_concept_and_side():
    """A swapped code (Edema coded as effusion, a right clavicle marked left) would write a SEG that
    every DICOM viewer labels wrongly; the table is written out from the SNOMED CT ids."""
    for name, (category, kind, side) in EXPECTED_CODES.items():
        meaning = segment_meaning(name)
        code = meaning.type.value if meaning.type.scheme_designator == "SCT" else f"P:{meaning.type.value}"
        assert meaning.type.scheme_designator in ("SCT", PRIVATE_SCHEME), name
        assert meaning.category.scheme_designator == "SCT", name
        got = (meaning.category.value, code, meaning.laterality.value if meaning.laterality else None)
        assert got == (category, kind, side), name
        if name in OBSERVATIONS:  # a viewer shows the meaning: it names the observation, word for word
            words = set(name.lower().replace("devices", "device").split())
            assert words <= set(meaning.type.meaning.lower().split()), (name, meaning.type.meaning)


def test_written_seg_keeps_row_column_spacing_and_each_segments_side(tmp_path):
    """make_cr's PixelSpacing is 0.2 mm between rows, 0.25 mm between columns: the SEG's Pixel
    Measures say the same, in that order; every lateral segment carries its own modifier."""
    source = make_cr()
    names = ["right lung", "left clavicle", "heart"]
    masks = np.zeros((3, 64, 48), dtype=bool)
    masks[0, :10, :5] = masks[1, 20:, 30:] = masks[2, 5, 7] = True
    write_seg(tmp_path / "seg.dcm", source, masks, names)
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [0.2, 0.25]
    sides = []
    for item in ds.SegmentSequence:
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        modifier = kind.get("SegmentedPropertyTypeModifierCodeSequence")
        sides.append((item.SegmentLabel, kind.CodeValue, modifier[0].CodeValue if modifier else None))
    assert sides == [("right lung", "39607008", "24028007"), ("left clavicle", "51299004", "7771000"),
                     ("heart", "80891009", None)]
    np.testing.assert_array_equal(ds.pixel_array.astype(bool), masks)


def test_algorithm_family_is_the_dcm_code_for_artificial_intelligence():
    """CID 7162: 123110 is "Artificial Intelligence"; the SEG wrote 123109 ("Manual Processing") under
    that meaning, so a reader going by the code saw a hand-drawn segmentation."""
    seg = build_seg(make_cr(), np.ones((1, 64, 48), bool), ["heart"])
    family = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmFamilyCodeSequence[0]
    assert (family.CodeValue, family.CodingSchemeDesignator, family.CodeMeaning) == ("123110", "DCM", "Artificial Intelligence")


def test_written_seg_carries_the_callers_options_and_the_source_header(tmp_path):
    """series_number, manufacturer and algorithm_name reach the SEG; the source's Patient Orientation
    is copied; text outside the default repertoire has its characters replaced by "?"."""
    source = make_cr(PatientOrientation=["P", "F"], PatientName="Иванов^Иван", StudyDescription="Грудь PA")
    write_seg(tmp_path / "seg.dcm", source, np.ones((2, 64, 48), bool), ["heart", "Support Devices"],
              series_number=901, algorithm_name="mynet", manufacturer="Hospital X")
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert (ds.SeriesNumber, ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions) == (
        901, "Hospital X", "mynet", cxrdoll.__version__)
    assert [item.SegmentAlgorithmName for item in ds.SegmentSequence] == ["mynet", "mynet"]
    assert list(ds.PatientOrientation) == ["P", "F"]
    assert (str(ds.PatientName), ds.StudyDescription) == ("??????^????", "????? PA")
    device = ds.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0]
    assert device.CodingSchemeDesignator == "99CXRDOLL"  # PS3.3 8.1: a local scheme's name starts with 99


def test_a_seg_that_cannot_be_written_is_an_output_error_naming_it(tmp_path):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "seg.dcm"  # under a file: no folder to write into
    with pytest.raises(OutputWriteError) as info:
        write_seg(path, make_cr(), np.ones((1, 64, 48), bool), ["heart"])
    assert info.value.filename == str(path)
