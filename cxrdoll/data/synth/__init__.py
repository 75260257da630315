"""Synthetic chest X-ray phantoms with true masks: the embedded default dataset and ground truth.

``anatomy`` (parametric chest) -> ``findings`` (one generator per CheXpert observation) ->
``render`` (attenuation layers to pixels) -> ``phantom`` (one image and its masks) ->
``writer`` (CheXpert, organ and lesion sets); ``lateral`` draws lateral views, ``preview`` a
contact sheet, ``command`` is ``python -m cxrdoll synth``.
"""
