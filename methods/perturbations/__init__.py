"""Evaluation-time perturbations of the latent message (SPEC section 6), one module each.

Every module in this folder is imported when the method registry loads, so a new
perturbation is one file here (a ``LatentPerturbation`` subclass with ``perturb``) plus its
statistics test in ``tests/test_perturbations.py``.
"""
