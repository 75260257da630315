"""Training pieces shared by the classifier bundle: masked loss, AUROC metric, recorders, checkpoints."""
