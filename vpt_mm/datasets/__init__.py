"""Datasets registered into mmpretrain's ``DATASETS``."""
from .digits import SklearnDigits

__all__ = ['SklearnDigits']
