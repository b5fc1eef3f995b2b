"""Shared-prompt forward for DPO: run each distinct prompt once per batch, not once per row.

Why: a DPO micro-batch of B pairs is 2B sequences ``prompt + completion`` (B chosen, B
rejected), and TRL runs the backbone over every one of them in full, then (on CPUs, where its
fused LM head has no Triton kernel) projects *every* position, prompt and padding included,
through the LM head. DAR pairs all share one prompt per task (the EoH ``i1`` prompt, ~730
SmolLM2 tokens) while completions are ~200-400 tokens, so about two thirds of that work repeats
the same prompt. Causal attention makes the prompt's hidden states and keys/values independent
of what follows, so they can be computed once and reused:

1. rows are grouped by their prompt tokens (the tokens before the first label that is not -100);
2. the backbone runs on each distinct prompt once, keeping its key/value cache (with autograd:
   the adapter's gradient flows back through the shared keys/values into the prompt pass);
3. the group's completions run as one right-padded batch on top of that cache, with positions
   continuing after the prompt;
4. only positions that predict a completion token go through the LM head (on CPU as full
   logits in row blocks, which is twice as fast as TRL's chunked kernel there; elsewhere, or
   when the logits would pass 2 GiB, TRL's :class:`trl.kernels.ChunkedLogProbFunction`), and
   the per-token fields are scattered back into TRL's ``(batch, seq_len - 1)`` layout.

The result is the same :class:`~trl.trainer.utils.FusedCausalLMOutput` TRL's fused head returns,
so TRL's loss, metrics, reference pass and ``precompute_ref_log_probs`` are unchanged; only float
summation order differs (tests compare loss and gradients against the unpatched trainer).

The patched forward falls back to TRL's own whenever its assumptions do not hold (left padding,
labels that are not one contiguous run after the prompt, ``shift_labels``, ``inputs_embeds``,
models with logit soft-capping or scaling, gradient checkpointing), so enabling it is always safe.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

# Model config attributes that change the LM head's logits; TRL's fused head honours them and
# this module does not, so a model with any of them set keeps TRL's forward.
_LOGIT_MODIFIERS = ("final_logit_softcapping", "logit_scale", "output_multiplier",
                    "lm_head_multiplier", "logits_scaling")
_CHUNK_SIZE = 32768  # vocabulary tile of the chunked log-prob kernel (TRL's value)
# On CPU, full logits for up to this many bytes (kept for the backward) instead of TRL's
# chunked kernel, which recomputes its tiles in the backward: measured 1.85 vs 3.6 CPU-s for
# 1300 positions x 49152 vocabulary, forward + backward.
_PLAIN_HEAD_MAX_BYTES = 2 << 30
_ROW_BLOCK = 2048


@dataclass
class PrefixSharingStats:
    """Token counts seen by the patched forward, to report how much work sharing saved."""

    calls: int = 0
    fallback_calls: int = 0
    fallback_reasons: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    prompts_run: int = 0
    tokens_unshared: int = 0  # real (unpadded) tokens TRL's forward would have run
    tokens_run: int = 0  # tokens the backbone ran here (prompts once + padded completions)
    head_positions_unshared: int = 0  # positions TRL's CPU path sends through the LM head
    head_positions_run: int = 0  # positions sent through the LM head here

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def supports_prefix_sharing(model: Any) -> tuple[bool, str]:
    """Whether :func:`enable_prefix_sharing` can patch ``model`` (a causal LM, not PEFT-wrapped);
    returns ``(ok, reason)``."""
    config = getattr(model, "config", None)
    if config is None:
        return False, "model has no config"
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in _LOGIT_MODIFIERS:
        value = getattr(text_config, name, None)
        if value not in (None, 1.0):
            return False, f"model config sets {name}={value!r} (TRL's head is used instead)"
    if text_config is not config:
        return False, "multimodal model (TRL's head is used instead)"
    if getattr(model, "get_output_embeddings", lambda: None)() is None:
        return False, "model has no output embeddings"
    return True, ""


def enable_prefix_sharing(trainer: Any) -> PrefixSharingStats:
    """Patch ``trainer``'s model so fused-head forwards share each prompt across rows.

    ``trainer`` is a TRL ``DPOTrainer`` (its fused LM head already installed). Returns the
    statistics object the patched forward updates. Raises ``ValueError`` when the model cannot
    be patched (see :func:`supports_prefix_sharing`).
    """
    model = trainer.model
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    ok, reason = supports_prefix_sharing(inner)
    if not ok:
        raise ValueError(f"prefix sharing is not available: {reason}")
    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")
    if getattr(trainer, "use_weighting", False):
        outputs += ("log_sum_sq_probs",)
    stats = PrefixSharingStats()
    fallback = inner.forward  # TRL's fused forward (an instance attribute set by TRL)
    # TRL's reference passes (adapter disabled) read only ``log_probs``: skip the metrics there
    lora_layer = next((m for m in inner.modules() if hasattr(m, "disable_adapters")
                       and hasattr(m, "lora_A")), None)

    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None,
                **kwargs: Any) -> Any:
        if not fused_lm_head:
            return fallback(*args, fused_lm_head=False, labels=labels, **kwargs)
        why = _unsupported_call(self, args, labels, kwargs)
        if why:
            stats.calls += 1
            stats.fallback_calls += 1
            stats.fallback_reasons[why] = stats.fallback_reasons.get(why, 0) + 1
            return fallback(*args, fused_lm_head=True, labels=labels, **kwargs)
        reference = lora_layer is not None and bool(lora_layer.disable_adapters)
        return shared_prefix_forward(self, kwargs["input_ids"], kwargs["attention_mask"], labels,
                                     outputs=("log_probs",) if reference else outputs, stats=stats)

    inner.forward = types.MethodType(forward, inner)
    return stats


def shared_prefix_trainer_class() -> type:
    """TRL's ``DPOTrainer`` with :func:`enable_prefix_sharing` installed as soon as TRL has
    added its fused LM head, so that ``precompute_ref_log_probs`` (run inside TRL's
    ``__init__``) shares prompts too. ``share_prompt_prefix=False`` gives TRL's behaviour.
    A function, so importing this module stays cheap."""
    from trl import DPOTrainer

    class SharedPrefixDPOTrainer(DPOTrainer):
        """``DPOTrainer`` whose forwards run each distinct prompt once per batch."""

        prefix_stats: PrefixSharingStats | None = None

        def __init__(self, *args: Any, share_prompt_prefix: bool = True,
                     precompute_eval_ref: bool = False, **kwargs: Any) -> None:
            self._share_prompt_prefix = share_prompt_prefix
            self._eval_ref_precomputed = False
            super().__init__(*args, **kwargs)
            self._install_prefix_sharing()
            if precompute_eval_ref:
                self._precompute_eval_reference()

        def _precompute_eval_reference(self) -> None:
            """Reference log-probs of the eval pairs once, not at every evaluation.

            Why: the reference (the adapter-disabled base) never changes, yet TRL re-runs it on
            the held-out pairs at each evaluation unless *every* dataset is precomputed, and a
            whole-training-set pass is wasted when a run visits a fraction of its pairs (the
            quick profile: 96 of 1,000). Only the eval dataset is precomputed here; training
            batches keep their live reference forward (:meth:`_compute_loss` switches per batch).
            """
            if self.precompute_ref_logps or self.eval_dataset is None or isinstance(self.eval_dataset, dict):
                return
            if len(self.eval_dataset) == 0:
                return
            from trl.trainer.utils import hash_module

            if self._precompute_model_hash is None:  # keys TRL's cache file to this model
                self._precompute_model_hash = hash_module(self.ref_model or self.model)
            batch = self.args.precompute_ref_batch_size or self.args.per_device_eval_batch_size
            self.eval_dataset = self._precompute_ref_logps(self.eval_dataset, "eval", batch)
            self._eval_ref_precomputed = True

        def _compute_loss(self, model: Any, inputs: Any, return_outputs: Any) -> Any:
            if not self._eval_ref_precomputed:
                return super()._compute_loss(model, inputs, return_outputs)
            # TRL reads one flag for every batch; here a batch uses its precomputed reference
            # log-probs when it carries them (eval batches) and the live forward otherwise.
            self.precompute_ref_logps = "ref_chosen_logps" in inputs
            try:
                return super()._compute_loss(model, inputs, return_outputs)
            finally:
                self.precompute_ref_logps = False

        def _install_prefix_sharing(self) -> None:
            if self._share_prompt_prefix and self.prefix_stats is None:
                self.prefix_stats = enable_prefix_sharing(self)

        def _precompute_ref_logps(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
            if len(dataset) == 0:  # every pair filtered out; the caller reports that clearly
                return dataset
            self._install_prefix_sharing()
            return super()._precompute_ref_logps(dataset, *args, **kwargs)

    return SharedPrefixDPOTrainer


_ALLOWED_KWARGS = {"input_ids", "attention_mask", "use_cache"}
_HARMLESS_KWARGS = {"return_dict": (True,), "output_attentions": (False,),
                    "output_hidden_states": (False,), "output_router_logits": (False,)}


def _unsupported_call(model: Any, args: tuple, labels: Any, kwargs: dict[str, Any]) -> str:
    """Why this fused-head call must use TRL's forward ("" when it need not)."""
    if args:
        return "positional arguments"
    # PEFT passes every optional argument explicitly, mostly as None
    extra = {k for k, v in kwargs.items() if v is not None and k not in _ALLOWED_KWARGS
             and not (k in _HARMLESS_KWARGS and v in _HARMLESS_KWARGS[k])}
    if extra:
        return "arguments " + ",".join(sorted(extra))
    if labels is None or kwargs.get("input_ids") is None or kwargs.get("attention_mask") is None:
        return "no labels, input_ids or attention_mask"
    if kwargs["attention_mask"].dim() != 2:
        return "non-2D attention mask"
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:  # transformers < 5.x name
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if checkpointing and model.training:
        return "gradient checkpointing"
    if not is_right_padded(kwargs["attention_mask"]):
        return "not right-padded"
    return ""


def is_right_padded(attention_mask: Any) -> bool:
    """Every row is ones then zeros (TRL's preference collator pads on the right)."""
    import torch

    lengths = attention_mask.sum(dim=1, keepdim=True)
    expected = torch.arange(attention_mask.shape[1], device=attention_mask.device) < lengths
    return bool((attention_mask.bool() == expected).all())


def shared_prefix_forward(model: Any, input_ids: Any, attention_mask: Any, labels: Any, *,
                          outputs: tuple[str, ...] = ("log_probs",),
                          stats: PrefixSharingStats | None = None) -> Any:
    """TRL's fused-head output for ``labels`` on right-padded rows, each prompt run once.

    ``labels`` is ``input_ids`` with -100 outside the completion (TRL's DPO convention). Falls
    back to a per-row prefix of 1 token for rows whose labels are not one contiguous run
    ending at the row's last real token (then nothing is shared for that row, but the result
    is still exact).
    """
    import torch
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import FusedCausalLMOutput

    n_rows, seq_len = input_ids.shape
    device = input_ids.device
    if not is_right_padded(attention_mask):
        raise ValueError("shared_prefix_forward needs right-padded rows (TRL's collator pads right)")
    lengths = [int(n) for n in attention_mask.sum(dim=1).tolist()]
    valid = labels != -100
    n_valid = valid.sum(dim=1).tolist()
    first_label = valid.int().argmax(dim=1).tolist()

    # Prompt length per row: tokens before the completion (>= 1, so the first completion token
    # has a predictor). A row whose labels are not exactly [p, length) is split after its first
    # token instead: nothing shared, still exact (unlabelled positions are zeroed below).
    prompt_len: list[int] = []
    for i in range(n_rows):
        p = int(first_label[i]) if n_valid[i] else lengths[i]
        if p < 1 or n_valid[i] != lengths[i] - p:
            p = 1
        prompt_len.append(min(p, max(lengths[i], 1)))

    groups: dict[tuple[int, ...], list[int]] = {}
    for i in range(n_rows):
        key = tuple(input_ids[i, :prompt_len[i]].tolist())
        groups.setdefault(key, []).append(i)

    backbone = model.base_model
    hidden_size = model.config.get_text_config().hidden_size
    # predictor hidden states and target tokens per row, in row order (for the scatter below)
    row_hidden: list[Any] = [None] * n_rows
    row_targets: list[Any] = [None] * n_rows
    tokens_run = 0
    for prompt, rows in groups.items():
        p = len(prompt)
        prompt_ids = input_ids[rows[0], :p].unsqueeze(0)
        out = backbone(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                       use_cache=True)
        prefix_hidden = out.last_hidden_state[0]  # [p, H]
        cache = out.past_key_values
        tokens_run += p
        comp_lens = [lengths[i] - p for i in rows]
        max_comp = max(comp_lens)
        comp_hidden = None
        if max_comp > 1:  # completions of one token need no pass of their own
            width = max_comp - 1  # the last real token predicts nothing
            comp_ids = input_ids.new_zeros((len(rows), width))
            comp_mask = attention_mask.new_zeros((len(rows), width))
            for r, i in enumerate(rows):
                c = comp_lens[r] - 1
                if c > 0:
                    comp_ids[r, :c] = input_ids[i, p:p + c]
                    comp_mask[r, :c] = 1
            if len(rows) > 1:
                cache.batch_repeat_interleave(len(rows))
            mask = torch.cat([attention_mask.new_ones((len(rows), p)), comp_mask], dim=1)
            positions = torch.arange(p, p + width, device=device).unsqueeze(0).expand(len(rows), -1)
            comp_out = backbone(input_ids=comp_ids, attention_mask=mask, position_ids=positions,
                                past_key_values=cache, use_cache=True)
            comp_hidden = comp_out.last_hidden_state  # [rows, width, H]
            tokens_run += len(rows) * width
        for r, i in enumerate(rows):
            c = comp_lens[r]
            if c <= 0:
                row_hidden[i] = prefix_hidden.new_zeros((0, hidden_size))
                row_targets[i] = input_ids.new_zeros((0,))
                continue
            parts = [prefix_hidden[p - 1:p]]
            if c > 1:
                parts.append(comp_hidden[r, :c - 1])
            row_hidden[i] = torch.cat(parts, dim=0)
            row_targets[i] = input_ids[i, p:p + c]

    # positions t-1 (shifted) that predict token t, for t in [p, length): the rows' layout
    score_mask = torch.zeros((n_rows, seq_len - 1), dtype=torch.bool, device=device)
    for i in range(n_rows):
        p, n = prompt_len[i], lengths[i]
        if n > p:
            score_mask[i, p - 1:n - 1] = True
    hidden = torch.cat(row_hidden, dim=0)
    targets = torch.cat(row_targets, dim=0)
    head = model.get_output_embeddings()
    n_bytes = hidden.shape[0] * head.weight.shape[0] * head.weight.element_size()
    if hidden.device.type == "cpu" and n_bytes <= _PLAIN_HEAD_MAX_BYTES:
        per_token = plain_head(hidden, head.weight, head.bias, targets, outputs)
    else:
        per_token = ChunkedLogProbFunction.apply(hidden, head.weight, head.bias, targets, 1.0,
                                                 _CHUNK_SIZE, None, 1.0, outputs)
    fields = [None if x is None else x.new_zeros(score_mask.shape).masked_scatter(score_mask, x)
              for x in per_token]
    # TRL's DPO sums log-probs over *labelled* positions only; keep rows whose split point was
    # moved (non-contiguous labels) exact by zeroing unlabelled positions.
    label_mask = valid[:, 1:]
    fields = [None if x is None else x.masked_fill(~label_mask, 0) for x in fields]
    log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1 = fields
    loss = -log_probs.sum() / label_mask.sum().clamp(min=1)

    if stats is not None:
        stats.calls += 1
        stats.rows += n_rows
        stats.prompts_run += len(groups)
        stats.tokens_unshared += sum(lengths)
        stats.tokens_run += tokens_run
        stats.head_positions_unshared += n_rows * (seq_len - 1)
        stats.head_positions_run += int(hidden.shape[0])
    return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=entropy,
                               log_sum_sq_probs=log_sum_sq_probs, mean_logits=mean_logits,
                               is_top1=is_top1, label_mask=label_mask)


def plain_head(hidden: Any, weight: Any, bias: Any, targets: Any,
               outputs: tuple[str, ...]) -> tuple[Any, Any, Any, Any, Any]:
    """The five per-token fields of TRL's chunked kernel (log_probs, entropy, log_sum_sq_probs,
    mean_logits, is_top1; None where not in ``outputs``) from full logits, in row blocks.

    Only ``log_probs`` carries a gradient, as in TRL's kernel; the others are metrics."""
    import torch

    fields: dict[str, list[Any]] = {k: [] for k in ("log_probs", "entropy", "log_sum_sq_probs",
                                                    "mean_logits", "is_top1")}
    for start in range(0, hidden.shape[0], _ROW_BLOCK):
        h = hidden[start:start + _ROW_BLOCK]
        t = targets[start:start + _ROW_BLOCK]
        logits = torch.nn.functional.linear(h, weight, bias).float()
        logp = torch.log_softmax(logits, dim=-1)
        fields["log_probs"].append(logp.gather(1, t[:, None]).squeeze(1))
        with torch.no_grad():
            lp = logp.detach()
            if "entropy" in outputs:
                fields["entropy"].append(-(lp.exp() * lp).sum(dim=-1))
            if "log_sum_sq_probs" in outputs:
                fields["log_sum_sq_probs"].append(torch.logsumexp(2 * lp, dim=-1))
            if "mean_logits" in outputs:
                fields["mean_logits"].append(logits.detach().mean(dim=-1))
            if "is_top1" in outputs:
                fields["is_top1"].append(logits.detach().argmax(dim=-1) == t)
    empty = hidden.new_zeros((0,))
    return tuple(  # type: ignore[return-value]
        (torch.cat(v) if v else empty) if (k == "log_probs" or k in outputs) else None
        for k, v in fields.items())


__all__ = ["PrefixSharingStats", "enable_prefix_sharing", "is_right_padded",
           "plain_head", "shared_prefix_forward", "shared_prefix_trainer_class", "supports_prefix_sharing"]
