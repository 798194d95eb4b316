"""Results of the benchmark protocol: per-task accuracy tables."""
from .results import summarize_results, write_results

__all__ = ['summarize_results', 'write_results']
