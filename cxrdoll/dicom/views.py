"""Frontal-view detection for chest radiographs.

Order of evidence, first match wins:
1. ``ViewPosition`` (0018,5101): PA / AP are frontal; LL, RL, LATERAL (and XTABLE LATERAL, a
   cross-table lateral) are lateral; anything else (e.g. decubitus LLD/RLD) is "OTHER".
2. ``ViewCodeSequence`` code meaning: "postero-anterior", "antero-posterior", "lateral" ("left
   lateral", ...); a decubitus view is "OTHER"; a meaning naming no view ("erect") is passed over.
3. Free text in SeriesDescription, ProtocolName, StudyDescription, ImageComments: the words PA, AP,
   FRONTAL, LATERAL / LAT (an underscore separates words: "CHEST_LAT" is lateral). A text naming a frontal *and* a lateral view ("XR CHEST PA AND LATERAL",
   common in StudyDescription) describes the study, not this image: it is passed over. One naming
   PA and AP ("AP/PA") says frontal of unknown position.
4. Otherwise "UNKNOWN". An unknown view is *accepted* as frontal when nothing better exists (many
   DX files omit ViewPosition); a known lateral or other view is never used.
"""

from __future__ import annotations

import re
from typing import Sequence

from pydicom.dataset import Dataset

FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")
# Preference when one study holds several images: PA, then AP, then an image of unknown view.
VIEW_PREFERENCE: tuple[str, ...] = ("PA", "AP", "UNKNOWN")

_LATERAL_POSITIONS = {"LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT", "XTABLE LATERAL"}
_TEXT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("LATERAL", re.compile(r"\b(LAT|LATERAL|LL|RL)\b")),
    ("PA", re.compile(r"\b(PA|POSTERO-?ANTERIOR)\b")),
    ("AP", re.compile(r"\b(AP|ANTERO-?POSTERIOR)\b")),
    ("UNKNOWN", re.compile(r"\bFRONTAL\b")),
)


def position_view(position: str) -> str:
    """The view a ViewPosition value names: PA, AP, LATERAL or OTHER; "" for a blank value."""
    position = position.strip().upper()
    if position in FRONTAL_VIEWS:
        return position
    if position in _LATERAL_POSITIONS:
        return "LATERAL"
    return "OTHER" if position else ""


def code_meaning_view(meaning: str) -> str:
    """The view a ViewCodeSequence code meaning names: PA, AP, LATERAL, OTHER (decubitus), or "" when
    it names none (blank, "erect")."""
    meaning = meaning.lower().replace(" ", "")
    if "decubitus" in meaning:  # 'left lateral decubitus': the patient lies on a side, the beam is frontal
        return "OTHER"
    if "postero-anterior" in meaning or "posteroanterior" in meaning:
        return "PA"
    if "antero-posterior" in meaning or "anteroposterior" in meaning:
        return "AP"
    return "LATERAL" if "lateral" in meaning else ""


def view_position(ds: Dataset) -> tuple[str, str]:
    """(view, evidence): view is PA, AP, LATERAL, OTHER or UNKNOWN; evidence names the attribute."""
    view = position_view(str(ds.get("ViewPosition", "") or ""))
    if view:
        return view, "ViewPosition"
    for item in ds.get("ViewCodeSequence", []) or []:
        view = code_meaning_view(str(item.get("CodeMeaning", "")))
        if view:
            return view, "ViewCodeSequence"
    for keyword in ("SeriesDescription", "ProtocolName", "StudyDescription", "ImageComments"):
        text = str(ds.get(keyword, "") or "").upper().replace("_", " ")  # CHEST_LAT: \b does not split on _
        found = {view for view, pattern in _TEXT_PATTERNS if pattern.search(text)}
        if "LATERAL" in found and len(found) > 1:
            continue
        specific = found - {"UNKNOWN"}
        if len(specific) == 1:
            return specific.pop(), keyword
        if found:
            return "UNKNOWN", keyword
    return "UNKNOWN", "none"


def is_usable_frontal(view: str) -> bool:
    """PA, AP, or unknown (the documented fallback); never a lateral or other view."""
    return view in VIEW_PREFERENCE


def rank_frontal(datasets: Sequence[Dataset]) -> tuple[list[Dataset], list[Dataset]]:
    """(Frontal images best first: PA, AP, unknown view, by file name within a view; the others).

    Every frontal image is ranked, not just the best, so that a series whose PA image does not
    decode still gives its AP image.
    """
    by_name = sorted(datasets, key=lambda ds: str(getattr(ds, "filename", "") or ""))
    views = [(view_position(ds)[0], ds) for ds in by_name]
    frontal = sorted((item for item in views if is_usable_frontal(item[0])), key=lambda item: VIEW_PREFERENCE.index(item[0]))
    return [ds for _, ds in frontal], [ds for view, ds in views if not is_usable_frontal(view)]
