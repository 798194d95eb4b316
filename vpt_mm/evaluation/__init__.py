"""Results of the benchmark protocol: per-task accuracy tables."""
from .results import significance_tests, summarize_results, write_results

__all__ = ['significance_tests', 'summarize_results', 'write_results']
