"""mmseg components: decode heads for frozen (prompted) backbones."""
from .heads import LinearBNHead

__all__ = ['LinearBNHead']
