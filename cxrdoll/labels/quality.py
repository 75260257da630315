"""Label quality against true masks, after the cheXlocalize protocol.

Per observation, on the *true-positive* images (the truth has the finding and the labeller made
a target for it; an observation the truth file does not annotate, such as CheXlocalize's Fracture,
is left out on that image):
- IoU of the binary mask with the truth;
- hit rate (pointing game): the soft map's peak lies inside the truth. Peaks of normalised maps are
  often flat (values clipped at 1); the peak pixel is then the tied pixel nearest the ties' centroid;
- soft-map AUROC: pixel AUROC of the soft map against the truth, per image, averaged;
- bootstrap 95 % CIs: images resampled with replacement (percentile method, fixed seed).
Truth masks are at the image's resolution and labels at ``image_size``. As in cheXlocalize, scores
are taken at the truth's resolution: the binary mask is enlarged by nearest-neighbour and the soft
map bilinearly to the truth's height and width (undoing the images' square resize). Shrinking the
truth instead would erase findings under half a label pixel wide, such as a fracture line.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cxrdoll.constants import LOCALISABLE_OBSERVATIONS, OBSERVATIONS
from cxrdoll.io import is_temporary
from cxrdoll.labels.writer import SHARD_DIR, check_label, read_label

METRICS = ("iou", "hit", "auroc")
_LOC = [OBSERVATIONS.index(o) for o in LOCALISABLE_OBSERVATIONS]


def _same_shape(label: np.ndarray, truth: np.ndarray, what: str) -> None:
    """A label at ``image_size`` scored against a truth at the image's resolution was read against the
    wrong pixels (pixel_auroc used a prefix of the truth, hit a pixel of another place, iou broadcast)."""
    if np.shape(label) != np.shape(truth):
        raise ValueError(f"{what} {np.shape(label)} and truth {np.shape(truth)} differ in shape; bring the label to "
                         "the truth's size first (to_truth_size)")


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree perfectly (1.0)."""
    _same_shape(pred, truth, "mask")
    pred, truth = pred.astype(bool), truth.astype(bool)
    union = np.logical_or(pred, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, truth).sum() / union)


def peak_pixel(soft: np.ndarray) -> tuple[int, int]:
    """``(y, x)`` of the map's maximum; among tied maxima, the one nearest their centroid."""
    ys, xs = np.nonzero(soft == soft.max())
    cy, cx = ys.mean(), xs.mean()
    j = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(ys[j]), int(xs[j])


def hit(soft: np.ndarray, truth: np.ndarray) -> float:
    """Pointing game: 1.0 if the peak is inside the truth; an all-zero map points nowhere (0.0)."""
    _same_shape(soft, truth, "soft map")
    if not np.any(soft > 0):
        return 0.0
    y, x = peak_pixel(soft)
    return float(bool(truth[y, x]))


def pixel_auroc(soft: np.ndarray, truth: np.ndarray) -> float:
    """Mann-Whitney AUROC of pixel scores against a boolean truth (equal scores count one half); NaN
    if one class is absent.

    Exact, in whole counts: for each positive pixel, the negatives scoring below it and those tying
    with it, found by binary search in the sorted negative scores. Truth is scored at a CXR's full
    resolution (6.6 M pixels a channel for CheXlocalize's 2320 x 2828); sorting values rather than
    ranking pixels (an argsort) took 0.40 s a channel there instead of 1.52 s on this repo's CPU.
    """
    _same_shape(soft, truth, "soft map")
    truth = truth.astype(bool).ravel()
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values = soft.ravel()
    if not np.isfinite(values).all():
        raise ValueError("soft map holds non-finite values")
    positives, negatives = np.sort(values[truth]), np.sort(values[~truth])
    below = np.searchsorted(negatives, positives, "left")
    tied = np.searchsorted(negatives, positives, "right") - below
    return float((below.sum(dtype=np.int64) + 0.5 * tied.sum(dtype=np.int64)) / (n_pos * n_neg))


def to_truth_size(mask: np.ndarray, soft: np.ndarray | None, shape: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Label channels ``(C, S, S)`` -> the truth's ``(C, H, W)``: the binary mask by nearest
    neighbour (boolean), the soft map bilinearly (float32)."""
    shape = tuple(int(v) for v in shape)
    if mask.shape[-2:] == shape:
        return mask.astype(bool), None if soft is None else soft.astype(np.float32)
    m = torch.as_tensor(mask.astype(np.float32)).unsqueeze(0)
    big_mask = (F.interpolate(m, size=shape, mode="nearest-exact")[0] >= 0.5).numpy()
    if soft is None:
        return big_mask, None
    s = torch.as_tensor(soft.astype(np.float32)).unsqueeze(0)
    return big_mask, F.interpolate(s, size=shape, mode="bilinear", align_corners=False)[0].numpy()


def read_truth(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A truth file's ``(14, H, W)`` mask, at the image's resolution (rarely square for a real CXR), and
    its ``(14,)`` boolean ``annotated``: the channels whose truth is known. CheXlocalize outlines 10 of the
    14 observations; an empty mask on another (Fracture) means unknown, not absent. A file without the
    key (the synthetic truth) annotates every channel."""
    arrays = read_label(path, keys=("mask", "annotated"))  # same .npz layout as a label's mask
    mask = arrays.get("mask")
    if mask is None:
        raise ValueError(f"{path}: truth file lacks key 'mask'")
    n = len(OBSERVATIONS)
    if mask.ndim != 3 or mask.shape[0] != n:
        raise ValueError(f"{path}: truth mask must be ({n}, H, W), got {mask.shape}")
    annotated = arrays.get("annotated", np.ones(n, dtype=bool))
    if annotated.shape != (n,) or annotated.dtype not in (np.bool_, np.uint8) or annotated.max() > 1:
        raise ValueError(f"{path}: truth 'annotated' must be {n} bool or 0/1 uint8 values, got {annotated.dtype} "
                         f"{annotated.shape}")
    annotated = annotated.astype(bool)
    filled = [OBSERVATIONS[c] for c in np.flatnonzero(~annotated) if mask[c].any()]
    if filled:  # an inverted or shifted 'annotated' would score the wrong channels
        raise ValueError(f"{path}: truth channel {filled[0]!r} is not annotated but its mask is not empty")
    return mask, annotated


def index_npz(folder: str | os.PathLike) -> dict[str, Path]:
    """Relative path without ``.npz`` -> file, for every ``.npz`` under ``folder`` but the labeller's
    bookkeeping (``SHARD_DIR``), atomic writes' temporaries and macOS's ``._*`` resource forks (which copies
    to SMB or FAT disks leave beside each file). Other names starting with a dot are ids like any other."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    index = {}
    for path in sorted(folder.rglob("*.npz")):
        rel = path.relative_to(folder)
        if rel.parts[0] != SHARD_DIR and not is_temporary(rel.name) and not rel.name.startswith("._"):
            index[rel.with_suffix("").as_posix()] = path
    return index


@dataclass
class Scores:
    """Per-image scores of one labelling: ``values[metric]`` is ``(N, 13)`` with NaN where not evaluated."""

    ids: list[str]
    values: dict[str, np.ndarray]
    truth_positive: np.ndarray  # (13,) images whose truth has the finding
    false_positive: np.ndarray  # (13,) images labelled positive whose annotated truth is empty
    annotated: np.ndarray  # (13,) images whose truth annotates the observation (the others are never scored)
    empty_soft: np.ndarray  # (13,) scored images whose soft map has no positive pixel (hit 0: it points nowhere)
    has_soft: bool = True


def _score_image(item_id: str, label_path: Path, truth_path: Path) -> Scores:
    """One image's :class:`Scores` (values ``(1, 13)``; see :func:`score_labelling`)."""
    c = len(_LOC)
    values = {m: np.full((1, c), np.nan) for m in METRICS}
    empty_soft = np.zeros(c, dtype=np.int64)
    label = read_label(label_path)
    if "mask" not in label or "state" not in label:
        raise ValueError(f"{label_path}: label file lacks 'mask' or 'state'")
    soft = label.get("soft")
    check_label(label_path, label["mask"], label["state"], soft)
    truth, known = read_truth(truth_path)
    truth, known = truth.astype(bool), known[_LOC]
    positive = truth[_LOC].reshape(len(_LOC), -1).any(axis=1)  # unannotated channels are empty (read_truth)
    targeted = label["state"][_LOC] == 1
    scored = [j for j in range(c) if positive[j] and targeted[j]]
    if scored:
        channels = [_LOC[j] for j in scored]
        masks, softs = to_truth_size(label["mask"][channels], None if soft is None else soft[channels],
                                     truth.shape[-2:])
        for k, (j, ch) in enumerate(zip(scored, channels)):
            values["iou"][0, j] = iou(masks[k], truth[ch])
            if softs is not None:
                values["hit"][0, j] = hit(softs[k], truth[ch])
                empty_soft[j] += not np.any(softs[k] > 0)
                values["auroc"][0, j] = pixel_auroc(softs[k], truth[ch])
    return Scores([item_id], values, positive.astype(np.int64), (targeted & known & ~positive).astype(np.int64),
                  known.astype(np.int64), empty_soft, soft is not None)


_COUNTS = ("truth_positive", "false_positive", "annotated", "empty_soft")


def score_labelling(labels: dict[str, Path], truths: dict[str, Path], ids: Sequence[str], desc: str = "label-quality",
                    progress: bool | None = False, workers: int = 1) -> Scores:
    """Score one label folder on ``ids`` (present in both indices). An observation the truth does not
    annotate on an image is left out there: neither scored, nor a true positive, nor a false positive.

    ``workers`` threads score images at once (numpy's sorts, zlib and torch's resize release the GIL:
    four 2320 x 2828 images with four targets each took 4.3 s with two, 8.7 s with one, on this repo's
    2-core CPU). ``progress``: a bar named ``desc`` (None: only on a terminal); at CheXlocalize's
    resolution an image with four targets takes about 2 s.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        images = list(tqdm(pool.map(lambda item_id: _score_image(item_id, labels[item_id], truths[item_id]), ids),
                           total=len(ids), desc=desc, unit="image", disable=None if progress is None else not progress))
    finally:  # a bad file stops the run now, not after every image queued behind it was scored
        pool.shutdown(cancel_futures=True)
    c = len(_LOC)
    return Scores(list(ids), {m: np.concatenate([np.empty((0, c)), *(im.values[m] for im in images)]) for m in METRICS},
                  *(sum((getattr(im, count) for im in images), np.zeros(c, dtype=np.int64)) for count in _COUNTS),
                  all(im.has_soft for im in images))


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """nanmean without the all-NaN warning (all-NaN gives NaN)."""
    count = np.sum(~np.isnan(x), axis=axis)
    total = np.nansum(x, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _mean_over_observations(values: np.ndarray) -> float:
    """Mean over observations of the per-observation means of ``(N, 13)`` scores (NaN if none)."""
    per_obs = _nanmean(values, axis=0)
    return float(_nanmean(per_obs, axis=0)) if np.any(~np.isnan(per_obs)) else float("nan")


def _observations_kept(defined: np.ndarray, rows: np.ndarray, observed: np.ndarray) -> bool:
    """Whether a resample (``rows``) still scores every observation the estimate scores: a resample
    that drew none of a rare observation's images would average a different set of observations."""
    return bool(np.all(observed[rows].any(axis=0)[defined]))


def _enough_resamples(kept: int, n_boot: int) -> bool:
    """Whether a CI may rest on ``kept`` of ``n_boot`` resamples: at least half of them."""
    return kept > 0 and 2 * kept >= n_boot


def summarise(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Point estimates and percentile 95 % CIs, per observation and for the mean over observations.

    Images (rows) are resampled jointly for every observation, so the CI of the mean respects the
    correlation between observations of the same image. The mean's CI uses the resamples that keep
    every observation of the estimate (``mean_resamples`` of them), and is left out when fewer than
    half do (many rare observations); an observation scored on a single image gets no CI.
    """
    observed = ~np.isnan(values)
    per_obs = _nanmean(values, axis=0)
    defined = ~np.isnan(per_obs)
    counts = observed.sum(axis=0)
    overall = _mean_over_observations(values)
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    lo = np.full(values.shape[1], np.nan)
    hi = np.full(values.shape[1], np.nan)
    overall_ci = (float("nan"), float("nan"))
    kept = 0
    if n > 0 and n_boot > 0:
        boot = np.empty((n_boot, values.shape[1]))
        keep = np.zeros(n_boot, dtype=bool)
        for b in range(n_boot):
            rows = rng.integers(0, n, size=n)
            boot[b] = _nanmean(values[rows], axis=0)
            keep[b] = _observations_kept(defined, rows, observed)
        with np.errstate(invalid="ignore"):
            for j in np.flatnonzero(counts >= 2):
                col = boot[:, j][~np.isnan(boot[:, j])]
                if col.size:  # a rare observation can be missing from every resample
                    lo[j], hi[j] = np.percentile(col, [2.5, 97.5])
            kept = int(keep.sum())
            if _enough_resamples(kept, n_boot) and defined.any():
                overall_ci = tuple(float(v) for v in np.percentile(_nanmean(boot[keep], axis=1), [2.5, 97.5]))
    return {
        "mean": overall,
        "mean_ci": list(overall_ci),
        "mean_resamples": kept,
        "per_observation": {
            obs: {"value": _f(per_obs[j]), "ci": [_f(lo[j]), _f(hi[j])], "n": int(counts[j])}
            for j, obs in enumerate(LOCALISABLE_OBSERVATIONS)
        },
    }


def paired_difference(reference: np.ndarray, other: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean-over-observations of ``reference`` minus ``other`` (both ``(N, 13)`` on the same images).

    Only the (image, observation) cells both labellings scored are compared: where their targets
    differ (``ensemble_predicted``, other policies), a labelling that skipped a hard image would
    otherwise look better. Both are resampled with the *same* image indices, so what the images
    share (easy or hard cases) cancels and the CI is that of the difference, not two overlapping
    marginal CIs; resamples that lose an observation of the estimate are left out, and the CI with
    them when fewer than half remain, as in :func:`summarise`. ``ahead`` is the share of resamples
    where ``reference`` is higher.
    """
    if reference.shape != other.shape:
        raise ValueError(f"paired scores must have the same shape, got {reference.shape} and {other.shape}")
    both = ~np.isnan(reference) & ~np.isnan(other)
    reference, other = np.where(both, reference, np.nan), np.where(both, other, np.nan)
    defined = both.any(axis=0)
    diff = _mean_over_observations(reference) - _mean_over_observations(other)
    rng = np.random.default_rng(seed)
    n = reference.shape[0]
    resamples = (rng.integers(0, n, size=n) for _ in range(n_boot if n else 0))
    boot = np.array([_mean_over_observations(reference[rows]) - _mean_over_observations(other[rows])
                     for rows in resamples if _observations_kept(defined, rows, both)])
    boot = boot[~np.isnan(boot)]
    enough = _enough_resamples(boot.size, n_boot)
    ci = [float(v) for v in np.percentile(boot, [2.5, 97.5])] if enough else [float("nan")] * 2
    return {"diff": diff, "ci": ci, "ahead": float(np.mean(boot > 0)) if enough else float("nan"),
            "cells": int(both.sum()), "resamples": int(boot.size)}


def _f(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def evaluate(
    labellings: Mapping[str, str | os.PathLike], truth_dir: str | os.PathLike, n_boot: int = 1000, seed: int = 0,
    progress: bool | None = False, workers: int = 1,
) -> dict[str, Any]:
    """Score several labellings on the images they all labelled and that have truth.

    The first labelling is the reference: every other one is also compared with it in a paired
    bootstrap of the mean IoU (``result["paired_iou"]``). ``progress``: a bar per labelling (None:
    only on a terminal); ``workers``: threads scoring images at once.
    """
    if not labellings:
        raise ValueError("no labellings given")
    truths = index_npz(truth_dir)
    indices = {name: index_npz(folder) for name, folder in labellings.items()}
    common = set(truths)
    for name, index in indices.items():
        if not set(index) & set(truths):
            raise ValueError(f"{labellings[name]}: no label file matches a truth file under {truth_dir}")
        common &= set(index)
    ids = sorted(common)
    if not ids:
        raise ValueError(f"the labellings {sorted(labellings)} have no image with truth in common")
    result: dict[str, Any] = {
        "truth": str(truth_dir), "images": len(ids), "truth_files": len(truths),
        # what was left out, so a half-finished labelling or another run's truth does not pass unnoticed
        "label_files": {name: len(index) for name, index in indices.items()},
        "bootstrap": {"resamples": n_boot, "seed": seed, "ci": 95},
        "observations": list(LOCALISABLE_OBSERVATIONS), "labellings": {},
    }
    reference = next(iter(labellings))
    result["paired_iou"] = {"reference": reference, "others": {}}
    reference_iou = np.empty(0)
    for name, folder in labellings.items():
        scores = score_labelling(indices[name], truths, ids, f"label-quality {name}", progress, workers)
        entry: dict[str, Any] = {
            "labels": str(folder),
            "truth_positive": dict(zip(LOCALISABLE_OBSERVATIONS, scores.truth_positive.tolist())),
            "false_positive": dict(zip(LOCALISABLE_OBSERVATIONS, scores.false_positive.tolist())),
            "truth_annotated": dict(zip(LOCALISABLE_OBSERVATIONS, scores.annotated.tolist())),
            "has_soft": scores.has_soft,
            "empty_soft_maps": dict(zip(LOCALISABLE_OBSERVATIONS, scores.empty_soft.tolist())),
        }
        for metric in METRICS:
            entry[metric] = summarise(scores.values[metric], n_boot, seed)
        result["labellings"][name] = entry
        if name == reference:
            reference_iou = scores.values["iou"]
        else:
            result["paired_iou"]["others"][name] = paired_difference(reference_iou, scores.values["iou"], n_boot, seed)
    return result


def _cell(value: float | None, ci: Sequence[float | None] | None = None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if ci is None or ci[0] is None or (isinstance(ci[0], float) and np.isnan(ci[0])):
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _empty_share(entry: dict[str, Any]) -> str:
    """'k of n': scored soft maps without a positive pixel, which count as misses in the hit rate
    (Grad-CAM's ReLU empties a map whose weighted activations are negative everywhere)."""
    if not entry["has_soft"]:
        return "—"
    scored = sum(o["n"] for o in entry["hit"]["per_observation"].values())
    return f"{sum(entry['empty_soft_maps'].values())} of {scored}"


def _unannotated(result: dict[str, Any]) -> str:
    """A sentence naming the observations the truth leaves unannotated on some images (CheXlocalize's
    Fracture, Pleural Other, Pneumonia): their empty columns mean unknown, not missed."""
    annotated = next(iter(result["labellings"].values()))["truth_annotated"]  # the same truth for every labelling
    images = result["images"]
    partial = [f"{obs} (annotated on {n} of {images})" for obs, n in annotated.items() if n < images]
    return (f" Left out where the truth does not annotate them (neither scored nor false positives there): "
            f"{', '.join(partial)}." if partial else "")


def _md(name: str) -> str:
    """A labelling's name for a markdown table: ``|`` (allowed in ``--labels NAME=DIR``) would split its cell."""
    return name.replace("|", "\\|")


def markdown_report(result: dict[str, Any]) -> str:
    """``label_quality.md``: a summary table across labellings, then one table per metric."""
    names = list(result["labellings"])
    boot = result["bootstrap"]
    lines = [
        "# Label quality",
        "",
        f"Truth: `{result['truth']}`; {result['images']} images labelled by every labelling "
        f"(of {result['truth_files']} truth files; label files: "
        f"{', '.join(f'{name} {count}' for name, count in result['label_files'].items())}). "
        f"Scored on true-positive images (truth has the finding, label targets it); "
        f"95 % CIs from {boot['resamples']} bootstrap resamples of images (seed {boot['seed']}).{_unannotated(result)}",
        "",
        "| labelling | mean IoU | mean hit rate | mean soft-map AUROC | empty soft maps |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        e = result["labellings"][name]
        lines.append(f"| {_md(name)} | " + " | ".join(_cell(e[m]["mean"], e[m]["mean_ci"]) for m in METRICS)
                     + f" | {_empty_share(e)} |")
    paired = result.get("paired_iou", {})
    if paired.get("others"):
        ref = paired["reference"]
        lines += ["", f"Paired against `{ref}` (each bootstrap resample draws the same images for both): mean IoU "
                  f"of `{ref}` minus the other's, with its 95 % CI and the share of resamples where `{ref}` is ahead.",
                  "", f"| labelling | mean IoU difference ({_md(ref)} − it) | {_md(ref)} ahead |", "|---|---|---|"]
        for name, d in paired["others"].items():
            ahead = "—" if np.isnan(d["ahead"]) else f"{d['ahead']:.0%}"
            lines.append(f"| {_md(name)} | {_cell(d['diff'], d['ci'])} | {ahead} |")
    titles = {"iou": "IoU", "hit": "Hit rate (pointing game)", "auroc": "Soft-map AUROC"}
    for metric in METRICS:
        lines += ["", f"## {titles[metric]}", "", "| observation | n | " + " | ".join(map(_md, names)) + " |",
                  "|---|---|" + "---|" * len(names)]
        for obs in result["observations"]:
            n = max(result["labellings"][name][metric]["per_observation"][obs]["n"] for name in names)
            cells = [
                _cell(result["labellings"][name][metric]["per_observation"][obs]["value"],
                      result["labellings"][name][metric]["per_observation"][obs]["ci"])
                for name in names
            ]
            lines.append(f"| {obs} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
