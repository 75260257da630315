"""Synthetic chest X-ray phantoms with true masks: the embedded default dataset and ground truth.

``anatomy`` (parametric chest) -> ``findings`` (one generator per CheXpert observation) ->
``render`` (attenuation layers to pixels) -> ``phantom`` (one image) -> ``writer`` (datasets).
"""
