"""Looking at a DPO training: curves from its log and base-vs-adapter samples.

Kept apart from :mod:`aad_kit.training.dpo` so that training needs no matplotlib and the
stage-5 notebook stays a few calls long.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

CURVES = (
    ("loss", "DPO loss", ("loss", "eval_loss")),
    ("margins", "reward margin (chosen - rejected)", ("rewards/margins", "eval_rewards/margins")),
    ("rewards", "implicit rewards", ("rewards/chosen", "rewards/rejected")),
    ("accuracy", "preference accuracy (chosen > rejected)",
     ("rewards/accuracies", "eval_rewards/accuracies")),
)
# Legend names: training batches vs the held-out pairs (stage 4's pairs on other settings).
_LABELS = {"loss": "train", "eval_loss": "held-out", "rewards/margins": "train",
           "eval_rewards/margins": "held-out", "rewards/accuracies": "train (batch)",
           "eval_rewards/accuracies": "held-out pairs"}


def plot_training_curves(log: Any, title: str = "DPO training") -> Any:
    """Loss, reward margin, chosen/rejected rewards and reward accuracy per optimizer step,
    from :func:`aad_kit.training.load_training_log` (a DataFrame). Returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.0 * len(CURVES), 3.2), squeeze=False)
    for ax, (_, label, cols) in zip(axes[0], CURVES, strict=True):
        for col in cols:
            if col in log and log[col].notna().any():
                m = log[col].notna()
                ax.plot(log["step"][m], log[col][m].astype(float), marker="o", ms=3,
                        label=_LABELS.get(col, col.split("/")[-1]))
        if label.startswith("DPO loss"):
            ax.axhline(0.6931, color="#9e9e9e", lw=0.8, ls="--", label="ln 2 (no preference)")
        if label.startswith("reward accuracy"):
            ax.set_ylim(-0.05, 1.05)
        if label.startswith("reward margin"):
            ax.axhline(0.0, color="#9e9e9e", lw=0.8, ls="--")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if any(c in log and log[c].notna().any() for c in cols[1:]) or label.startswith("DPO loss"):
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def user_prompts(dataset: Any, n: int = 1) -> list[str]:
    """The user turns of the first ``n`` distinct prompts of a preference dataset (for
    conversational rows: the last ``user`` message; for plain rows: the prompt string)."""
    out: list[str] = []
    for row in dataset:
        prompt = row["prompt"]
        if isinstance(prompt, list):
            users = [m["content"] for m in prompt if m.get("role") == "user"]
            text = users[-1] if users else prompt[-1]["content"]
        else:
            text = prompt
        if text not in out:
            out.append(text)
        if len(out) >= n:
            break
    return out


def sample_before_after(
    base_model: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str],
    prompts: Sequence[str],
    *,
    n: int = 2,
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Sample ``n`` answers per prompt from the base model and from base + adapter with the
    same seed and settings (the kit's HF sampler). Returns rows: prompt index, sample index,
    model ("base" / "base+adapter"), text, tokens, finish reason."""
    import gc

    from aad_kit.llm import GenerationConfig, make_sampler

    cfg = GenerationConfig(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    rows: list[dict[str, Any]] = []
    from aad_kit.models import REGISTRY

    spec = str(base_model) if str(base_model) in REGISTRY else f"hf:{base_model}"  # default engine
    for label, kw in (("base", {}), ("base+adapter", {"adapter_path": str(adapter_dir)})):
        sampler = make_sampler(spec, **kw)
        for i, completions in enumerate(sampler.sample(list(prompts), n=n, config=cfg)):
            for j, c in enumerate(completions):
                rows.append({"prompt": i, "sample": j, "model": label, "text": c.text,
                             "tokens": c.completion_tokens, "finish": c.finish_reason})
        del sampler
        gc.collect()
    return rows


__all__ = ["CURVES", "plot_training_curves", "sample_before_after", "user_prompts"]
