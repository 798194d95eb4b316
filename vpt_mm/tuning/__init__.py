"""Tuning protocols: which parameters train, and the parameter accounting."""
from .accounting import ParamCount, count_parameters, format_param_count

__all__ = ['ParamCount', 'count_parameters', 'format_param_count']
