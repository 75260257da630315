"""Deployment of the fine-tuned segmenter: bundle runner, overlays, and MONAI Deploy operators.

``cxrdoll.deploy.operators`` needs the optional ``requirements-deploy.txt`` (MONAI Deploy SDK);
the rest works without it.
"""
