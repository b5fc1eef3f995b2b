"""Code only the benchmarks use (and their tests): kept out of the ``aad_kit`` package.

* :mod:`benchmarks.lib.oneshot`: one candidate in a fresh interpreter with the sandbox's
  isolation (``benchmarks/eval_executors.py``'s process-per-candidate executor);
* :mod:`benchmarks.lib.sandbox_overhead`: the sandbox's cost on a trivial candidate
  (``python -m benchmarks.lib.sandbox_overhead``);
* :mod:`benchmarks.lib.dpo_timing`: a synthetic preference set and seconds per DPO step per
  variant (``python -m benchmarks.lib.dpo_timing``);
* :mod:`benchmarks.lib.flops`: the arithmetic floor of a DPO step.

Scripts put the repository root on ``sys.path`` and import ``benchmarks.lib.<module>``.
"""
