"""Sequence models around compiled cells: patching, stacking, rollout, scheduled sampling."""
from cellgen.sequence.model import Carry, SequenceConfig, SequenceModel
from cellgen.sequence.patch import reshape_patch, reshape_patch_back
from cellgen.sequence.sampling import ReverseScheduledSampling, ScheduledSampling

__all__ = ["Carry", "SequenceConfig", "SequenceModel", "ScheduledSampling", "ReverseScheduledSampling", "reshape_patch", "reshape_patch_back"]
