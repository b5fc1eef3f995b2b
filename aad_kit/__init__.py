"""aad-kit: automated algorithm design with fine-tuned LLMs.

Evaluator-first: every stage (search, DAR sampling, DPO, generalisation) consumes scores
produced by the task evaluators in :mod:`aad_kit.tasks`, run through the one sandbox in
:mod:`aad_kit.sandbox`.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Bumped whenever a change could alter any score an evaluator reports (instances, metric,
# tie-breaking, sandbox semantics). Stored with every cached or persisted result so that
# numbers from different evaluator versions are never mixed silently.
EVALUATOR_VERSION = "1"

__all__ = ["__version__", "EVALUATOR_VERSION"]
