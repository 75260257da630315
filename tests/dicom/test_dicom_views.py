"""Frontal-view detection and selection, with each documented fallback."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from cxrdoll.dicom.views import rank_frontal, view_position


def _ds(**attributes) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _code(meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "R-10214", "SRT", meaning
    return item


@pytest.mark.parametrize(
    "attributes, expected",
    [
        ({"ViewPosition": "PA"}, ("PA", "ViewPosition")),
        ({"ViewPosition": "ap "}, ("AP", "ViewPosition")),
        ({"ViewPosition": "LL"}, ("LATERAL", "ViewPosition")),
        ({"ViewPosition": "LLD"}, ("OTHER", "ViewPosition")),
        ({"ViewPosition": "RL"}, ("LATERAL", "ViewPosition")),
        ({"SeriesDescription": "CHEST RL"}, ("LATERAL", "SeriesDescription")),  # not an unknown (usable) view
        # the series describes this image, the study only the examination: the series' text wins
        ({"StudyDescription": "CHEST PA", "SeriesDescription": "LAT"}, ("LATERAL", "SeriesDescription")),
        ({"ProtocolName": "CHEST AP", "SeriesDescription": "PA"}, ("PA", "SeriesDescription")),
        ({"ViewCodeSequence": [_code("postero-anterior")]}, ("PA", "ViewCodeSequence")),
        ({"ViewCodeSequence": [_code("antero-posterior")]}, ("AP", "ViewCodeSequence")),
        ({"ViewCodeSequence": [_code("lateral")]}, ("LATERAL", "ViewCodeSequence")),
        ({"ViewCodeSequence": [_code("left lateral")]}, ("LATERAL", "ViewCodeSequence")),
        # a decubitus film is no lateral projection; a meaning naming no view gives way to the next evidence
        ({"ViewCodeSequence": [_code("left lateral decubitus")]}, ("OTHER", "ViewCodeSequence")),
        ({"ViewCodeSequence": [_code("Erect")], "SeriesDescription": "CHEST PA"}, ("PA", "SeriesDescription")),
        # meanings are read whatever their case and spacing, hyphenated or not
        ({"ViewCodeSequence": [_code("Postero-Anterior")]}, ("PA", "ViewCodeSequence")),
        ({"ViewCodeSequence": [_code("antero posterior")]}, ("AP", "ViewCodeSequence")),
        ({"ViewCodeSequence": [_code("anteroposterior")]}, ("AP", "ViewCodeSequence")),
        ({"ViewCodeSequence": [_code("postero anterior")]}, ("PA", "ViewCodeSequence")),
        ({"ViewCodeSequence": [_code("Erect"), _code("postero-anterior")]}, ("PA", "ViewCodeSequence")),  # the item naming a view
        ({"ViewCodeSequence": [_code("LEFT LATERAL DECUBITUS")]}, ("OTHER", "ViewCodeSequence")),
        ({"ViewPosition": "XTABLE LATERAL"}, ("LATERAL", "ViewPosition")),
        ({"ViewPosition": "LAT"}, ("LATERAL", "ViewPosition")),
        ({"ViewPosition": "RLAT"}, ("LATERAL", "ViewPosition")),
        ({"ViewPosition": "LLAT"}, ("LATERAL", "ViewPosition")),
        ({"SeriesDescription": "CHEST PA"}, ("PA", "SeriesDescription")),
        ({"SeriesDescription": "PA CHEST COLLIMATED"}, ("PA", "SeriesDescription")),  # whole words: no LL in COLLIMATED
        ({"ProtocolName": "Thorax AP supine"}, ("AP", "ProtocolName")),
        ({"SeriesDescription": "CHEST POSTEROANTERIOR"}, ("PA", "SeriesDescription")),  # spelt out
        ({"SeriesDescription": "Thorax antero-posterior"}, ("AP", "SeriesDescription")),
        ({"SeriesDescription": "chest lat"}, ("LATERAL", "SeriesDescription")),
        ({"ProtocolName": "CHEST_LAT"}, ("LATERAL", "ProtocolName")),  # \b alone does not split on _
        ({"ProtocolName": "Thorax_PA_upright"}, ("PA", "ProtocolName")),
        ({"SeriesDescription": "CHEST", "ImageComments": "frontal"}, ("UNKNOWN", "ImageComments")),
        ({"SeriesDescription": "CHEST 1 VIEW"}, ("UNKNOWN", "none")),
        # a text naming a frontal and a lateral view describes the study, not this image
        ({"StudyDescription": "XR CHEST PA AND LATERAL"}, ("UNKNOWN", "none")),
        ({"SeriesDescription": "CHEST 2V PA/LAT", "ImageComments": "PA"}, ("PA", "ImageComments")),
        ({"StudyDescription": "FRONTAL AND LATERAL", "ImageComments": "lat"}, ("LATERAL", "ImageComments")),
        ({"SeriesDescription": "CHEST AP/PA"}, ("UNKNOWN", "SeriesDescription")),
        ({"SeriesDescription": "PA FRONTAL"}, ("PA", "SeriesDescription")),
        ({}, ("UNKNOWN", "none")),
    ],
)
def test_view_position_evidence_order(attributes, expected):
    assert view_position(_ds(**attributes)) == expected


def test_view_position_wins_over_text():
    assert view_position(_ds(ViewPosition="AP", SeriesDescription="PA chest")) == ("AP", "ViewPosition")


def test_rank_frontal_orders_pa_then_ap_then_unknown_and_sets_laterals_apart():
    lateral, ap, pa, unknown = _ds(ViewPosition="LL"), _ds(ViewPosition="AP"), _ds(ViewPosition="PA"), _ds()
    assert rank_frontal([lateral, ap, pa, unknown]) == ([pa, ap, unknown], [lateral])
    assert rank_frontal([lateral, unknown, ap]) == ([ap, unknown], [lateral])
    decubitus = _ds(ViewPosition="RLD")
    assert rank_frontal([lateral, decubitus]) == ([], [lateral, decubitus])
    second, first = _ds(ViewPosition="AP"), _ds(ViewPosition="AP")
    second.filename, first.filename = "b.dcm", "a.dcm"
    # by file name within a view (compared by name: equal datasets would pass in any order)
    assert [ds.filename for ds in rank_frontal([second, first])[0]] == ["a.dcm", "b.dcm"]
