"""Arithmetic floor of a DPO step: FLOPs counted from the model shape, divided by the GEMM
throughput this machine measurably reaches.

Why: "is training slow?" needs a yardstick that does not depend on any implementation. The
floor is what the matrix products alone would take at the speed ``torch.mm`` reaches here on
the model's own shapes; everything else (attention softmax, norms, activations, the optimiser,
Python) is overhead on top. Two floors are reported for one batch:

* ``padded``: the work as TRL lays it out: every row ``prompt + completion``, right-padded to
  the batch's longest row, and (on CPU) every position through the LM head;
* ``unique``: the work that cannot be avoided: each distinct prompt once per batch, each
  completion once, only completion positions through the LM head.

Counting conventions (a frozen base model with LoRA adapters): a linear layer's forward costs
``2 * in * out`` FLOPs per token; its backward needs only the input gradient (``2 * in * out``,
the frozen weight needs none); a LoRA pair adds ``2 * r * (in + out)`` forward and about twice
that backward; causal attention costs ``4 * d_head * n_heads`` per (query, key) pair forward
and twice that backward; the LM head ``2 * d * vocab`` per scored position forward and the same
again backward. The reference pass is one forward (none with precomputed reference log-probs).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that set its FLOPs."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    lora_r: int = 0  # 0: no adapter

    @classmethod
    def from_config(cls, config: Any, lora_r: int = 0) -> ModelShape:
        c = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = int(c.num_attention_heads)
        head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // heads)
        return cls(layers=int(c.num_hidden_layers), hidden=int(c.hidden_size),
                   intermediate=int(c.intermediate_size), heads=heads,
                   kv_heads=int(getattr(c, "num_key_value_heads", None) or heads),
                   head_dim=head_dim, vocab=int(c.vocab_size), lora_r=lora_r)

    def linears(self) -> list[tuple[int, int]]:
        """(in, out) of the linear layers of one decoder layer (q, k, v, o, gate, up, down)."""
        d, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return [(d, q), (d, kv), (d, kv), (q, d), (d, i), (d, i), (i, d)]

    def linear_flops_per_token(self) -> float:
        return 2.0 * self.layers * sum(a * b for a, b in self.linears())

    def lora_flops_per_token(self) -> float:
        return 2.0 * self.layers * self.lora_r * sum(a + b for a, b in self.linears())

    def attention_flops_per_pair(self) -> float:
        """Forward FLOPs of one (query, key) pair over all layers: scores and weighted sum."""
        return 4.0 * self.layers * self.heads * self.head_dim

    def head_flops_per_position(self) -> float:
        return 2.0 * self.hidden * self.vocab


@dataclass(frozen=True)
class Work:
    """Forward work of one pass: tokens through the layers, attention pairs, head positions."""

    tokens: int
    attention_pairs: int
    head_positions: int


def padded_work(prompt_lens: Sequence[int], completion_lens: Sequence[int]) -> Work:
    """TRL's layout: each row prompt+completion, padded to the longest, all positions scored.
    Padding positions are computed like real ones (they are in the tensors)."""
    lengths = [p + c for p, c in zip(prompt_lens, completion_lens, strict=True)]
    width = max(lengths)
    n = len(lengths)
    return Work(tokens=n * width, attention_pairs=n * width * (width + 1) // 2,
                head_positions=n * (width - 1))


def unique_work(prompt_lens: Sequence[int], completion_lens: Sequence[int],
                prompt_groups: Sequence[int] | None = None) -> Work:
    """Each distinct prompt once (``prompt_groups[i]`` names row i's prompt; default: one
    prompt shared by all rows), each completion once, only completion positions scored."""
    groups = list(prompt_groups) if prompt_groups is not None else [0] * len(prompt_lens)
    seen: dict[int, int] = {}
    tokens = pairs = 0
    for g, p in zip(groups, prompt_lens, strict=True):
        if g not in seen:
            seen[g] = p
            tokens += p
            pairs += p * (p + 1) // 2
    for p, c in zip(prompt_lens, completion_lens, strict=True):
        tokens += c
        pairs += c * p + c * (c + 1) // 2
    return Work(tokens=tokens, attention_pairs=pairs, head_positions=sum(completion_lens))


def step_flops(shape: ModelShape, work: Work, reference: bool = True) -> dict[str, float]:
    """FLOPs of one micro-batch: policy forward + backward, plus a reference forward."""
    fwd_linear = work.tokens * shape.linear_flops_per_token()
    fwd_lora = work.tokens * shape.lora_flops_per_token()
    fwd_attn = work.attention_pairs * shape.attention_flops_per_pair()
    fwd_head = work.head_positions * shape.head_flops_per_position()
    policy = (2 * fwd_linear) + (3 * fwd_lora) + (3 * fwd_attn) + (2 * fwd_head)
    ref = (fwd_linear + fwd_attn + fwd_head) if reference else 0.0
    return {"policy": policy, "reference": ref, "total": policy + ref,
            "forward_linear": fwd_linear, "forward_attention": fwd_attn, "forward_head": fwd_head}


def measure_gemm_gflops(shape: ModelShape, tokens: int = 1024, threads: int | None = None,
                        reps: int = 5) -> float:
    """Median fp32 GFLOP/s of ``torch.mm`` on one decoder layer's linear shapes plus the LM
    head at ``tokens`` rows: the speed the floor assumes for all arithmetic."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        mats = [(torch.randn(tokens, a, generator=gen), torch.randn(a, b, generator=gen))
                for a, b in shape.linears() + [(shape.hidden, min(shape.vocab, 8192))]]
        flops = sum(2.0 * tokens * a.shape[1] * b.shape[1] for a, b in mats)
        for a, b in mats:  # warm-up
            torch.mm(a, b)
        rates = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for a, b in mats:
                torch.mm(a, b)
            rates.append(flops / (time.perf_counter() - t0) / 1e9)
        return statistics.median(rates)
    finally:
        torch.set_num_threads(old)


def floor_report(shape: ModelShape, prompt_lens: Sequence[int], completion_lens: Sequence[int],
                 gflops: float, reference: bool = True,
                 prompt_groups: Sequence[int] | None = None) -> dict[str, Any]:
    """Both floors (seconds per micro-batch) for one batch's rows at ``gflops``."""
    out: dict[str, Any] = {"gflops": gflops, "shape": asdict(shape)}
    for name, work in (("padded", padded_work(prompt_lens, completion_lens)),
                       ("unique", unique_work(prompt_lens, completion_lens, prompt_groups))):
        f = step_flops(shape, work, reference)
        out[name] = {"tokens": work.tokens, "head_positions": work.head_positions,
                     "tflop": f["total"] / 1e12, "floor_s": f["total"] / (gflops * 1e9)}
    return out


__all__ = ["ModelShape", "Work", "floor_report", "measure_gemm_gflops", "padded_work",
           "step_flops", "unique_work"]
