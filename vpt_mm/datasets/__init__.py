"""Datasets registered into mmpretrain's ``DATASETS``."""
from .benchmarks import GROUPS, TASKS, TaskInfo, get_task, tasks_of
from .digits import SklearnDigits
from .fgvc import FGVC
from .memory import InMemoryDataset
from .vtab import VTAB1k

__all__ = [
    'FGVC', 'GROUPS', 'InMemoryDataset', 'SklearnDigits', 'TASKS',
    'TaskInfo', 'VTAB1k', 'get_task', 'tasks_of'
]
