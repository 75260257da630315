"""Names shared by every stage, so that channel order never drifts between bundles."""

# The 14 CheXpert observations, in the column order of CheXpert's train.csv.
OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The five observations of the CheXpert competition, averaged for model selection.
COMPETITION_OBSERVATIONS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

# CheXpert CSV metadata columns, before the 14 observations.
CHEXPERT_META_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
CHEXPERT_COLUMNS: tuple[str, ...] = CHEXPERT_META_COLUMNS + OBSERVATIONS

# Observations whose positive (or uncertain) value makes "No Finding" false: CheXpert's labeller
# does not count support devices as a finding.
PATHOLOGIES: tuple[str, ...] = tuple(o for o in OBSERVATIONS if o not in ("No Finding", "Support Devices"))

# Observations that have a spatial extent; "No Finding" has no mask.
LOCALISABLE_OBSERVATIONS: tuple[str, ...] = tuple(o for o in OBSERVATIONS if o != "No Finding")


def observation_index(name: str) -> int:
    """Channel index of an observation, with a helpful error for typos."""
    try:
        return OBSERVATIONS.index(name)
    except ValueError:
        raise KeyError(f"unknown observation {name!r}; expected one of {list(OBSERVATIONS)}") from None
