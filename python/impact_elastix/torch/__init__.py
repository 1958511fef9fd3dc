"""IMPACT as a PyTorch loss: ``ImpactLoss`` / ``impact_loss`` and the feature distances."""

from __future__ import annotations

from .distances import NAMES as DISTANCES
from .distances import distance
from .loss import FeatureExtractor, ImpactLoss, impact_loss

__all__ = ["DISTANCES", "FeatureExtractor", "ImpactLoss", "distance", "impact_loss"]
