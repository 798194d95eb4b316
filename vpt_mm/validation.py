"""Type checks of config values: a string where a bool or a number belongs,
or a bool where a number belongs, is an error naming the key and the value
(``deep='False'`` must not train VPT-Deep)."""
from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence


class ConfigTypeError(TypeError, ValueError):
    """A config value of the wrong type. Also a ``ValueError``, the error
    the rest of the config checks raise."""


def require_bool(name: str, value: Any) -> bool:
    """``value`` if it is True or False."""
    if not isinstance(value, bool):
        raise ConfigTypeError(f'{name} must be True or False, got {value!r} '
                              f'({type(value).__name__})')
    return value


def require_int(name: str,
                value: Any,
                minimum: Optional[int] = None,
                optional: bool = False) -> Optional[int]:
    """``value`` if it is an integer (not a bool), >= ``minimum``; None too
    if ``optional``."""
    if value is None and optional:
        return None
    what = 'an integer' + ('' if minimum is None else f' >= {minimum}')
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigTypeError(f'{name} must be {what}, got {value!r} '
                              f'({type(value).__name__})')
    if minimum is not None and value < minimum:
        raise ValueError(f'{name} must be {what}, got {value!r}')
    return int(value)


def require_number(name: str, value: Any,
                   optional: bool = False) -> Optional[float]:
    """``value`` as a float if it is a real number (not a bool or a
    string); None too if ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigTypeError(f'{name} must be a number, got {value!r} '
                              f'({type(value).__name__})')
    return float(value)


def require_str(name: str, value: Any, optional: bool = False) -> \
        Optional[str]:
    """``value`` if it is a string; None too if ``optional``."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ConfigTypeError(f'{name} must be a string, got {value!r} '
                              f'({type(value).__name__})')
    return value


def require_str_list(name: str, value: Any) -> tuple:
    """``value`` as a tuple if it is a list or tuple of strings (a bare
    string is refused: it would be read character by character)."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(
            isinstance(v, str) for v in value):
        raise ConfigTypeError(f'{name} must be a list of strings, got '
                              f'{value!r}')
    return tuple(value)
