"""A small input folder mixing the bad items the deploy app must skip with ones it must write."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import generate_uid

from tests.dicom.synthetic_dicom import make_cr, save

ESCAPING_UID = "1.2.3/../../escaped"


def make_bad_batch(folder: Path) -> dict[str, str]:
    """Write the batch; returns each good file's SOP Instance UID.

    ``a_bad_uid.dcm``: a UID that would leave the output folder. One series holds a truncated PA
    (``b_pa_truncated.dcm``), a good AP (``c_ap_good.dcm``) and a lateral (``d_lateral.dcm``).
    ``e_good.dcm``: a good PA in its own series, after the bad ones. ``notes.txt``: not DICOM.
    """
    folder.mkdir(parents=True, exist_ok=True)
    save(make_cr(SOPInstanceUID=ESCAPING_UID), folder / "a_bad_uid.dcm")
    series = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": generate_uid()}
    truncated = make_cr(**series)
    truncated.PixelData = truncated.PixelData[:100]
    save(truncated, folder / "b_pa_truncated.dcm")
    ap, good = make_cr(ViewPosition="AP", **series), make_cr()
    save(ap, folder / "c_ap_good.dcm")
    save(make_cr(ViewPosition="LL", **series), folder / "d_lateral.dcm")
    save(good, folder / "e_good.dcm")
    (folder / "notes.txt").write_text("not DICOM\n")
    return {"c_ap_good.dcm": ap.SOPInstanceUID, "e_good.dcm": good.SOPInstanceUID}


def make_only_bad(folder: Path) -> None:
    """Files that are all skipped: colour, no pixel data, not DICOM."""
    folder.mkdir(parents=True, exist_ok=True)
    save(make_cr(PhotometricInterpretation="PALETTE COLOR"), folder / "palette.dcm")
    save(make_cr(PixelData=None), folder / "nopixel.dcm")
    (folder / "notes.txt").write_text("not DICOM\n")
