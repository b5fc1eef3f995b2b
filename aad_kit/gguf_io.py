"""GGUF files the kit reads and writes: model metadata, the tiny model's GGUF, LoRA adapters.

Why: the llama.cpp sampling backend runs a model from its GGUF file, and the tuned model must
sample through the same engine, so a PEFT LoRA adapter (what DPO trains) is exported to
llama.cpp's GGUF LoRA format here. Written with the ``gguf`` package (the one llama.cpp
publishes); nothing is downloaded.

Layout facts relied on (llama.cpp's converters): HF ``q_proj``/``k_proj`` rows of ``llama``
models are permuted into llama.cpp's rotary order (``qwen2`` keeps HF order); a LoRA tensor
pair is ``blk.N.<name>.weight.lora_a`` (numpy shape ``(r, in)``) and ``...lora_b``
(``(out, r)``), and llama.cpp scales ``B @ A`` by ``adapter.lora.alpha / r``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

# HF module path inside a decoder layer -> llama.cpp tensor name.
LAYER_TENSORS: dict[str, str] = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
# Architectures whose Q/K rows llama.cpp stores permuted.
_PERMUTED_QK = {"llama"}
_LORA_KEY = re.compile(
    r"(?:^|\.)layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.lora_([AB])\.weight$"
)


def permute_qk(x: Any, heads: int) -> Any:
    """HF rotary row order -> llama.cpp's, for ``llama`` Q/K weights (rows = heads * dim)."""
    return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def _field_value(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # noqa: BLE001 - older gguf versions
        part = f.parts[f.data[0]]
        return bytes(part).decode("utf-8") if part.dtype.kind == "u" and part.dtype.itemsize == 1 else part.tolist()[0]


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What the installer checks before trusting a GGUF: name, architecture, block count,
    head counts and the count of each tensor type."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    arch = _field_value(reader, "general.architecture")
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return {
        "name": _field_value(reader, "general.name"),
        "architecture": arch,
        "block_count": _field_value(reader, f"{arch}.block_count"),
        "head_count": _field_value(reader, f"{arch}.attention.head_count"),
        "head_count_kv": _field_value(reader, f"{arch}.attention.head_count_kv"),
        "tensor_types": dict(sorted(types.items())),
        "n_tensors": len(reader.tensors),
    }


def write_llama_gguf(model_dir: str | os.PathLike[str], path: str | os.PathLike[str],
                     name: str | None = None) -> Path:
    """An fp32 GGUF of a saved Llama checkpoint with a byte-level BPE tokenizer (the tiny test
    model), laid out as llama.cpp's converter does: Q/K rows permuted, gpt2 tokenizer
    metadata, the chat template. Lets the llama.cpp backend run on the tiny model offline."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    model_dir, path = Path(model_dir), Path(path)
    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = dict(tok["model"]["vocab"])
    for added in tok["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {a["content"] for a in tok["added_tokens"] if a["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    n_head, n_kv, hidden = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    rope = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 1e4)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name or model_dir.name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(hidden // n_head)
    w.add_rope_freq_base(float(rope))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])  # 3 = control
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    template = model_dir / "chat_template.jinja"
    if template.is_file():
        w.add_chat_template(template.read_text())

    sd = load_file(model_dir / "model.safetensors")
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if "lm_head.weight" in sd and not cfg.get("tie_word_embeddings", False):
        w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(cfg["num_hidden_layers"]):
        for hf_name, gguf_name in LAYER_TENSORS.items():
            x = sd[f"model.layers.{i}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                x = permute_qk(x, n_head)
            elif gguf_name == "attn_k":
                x = permute_qk(x, n_kv)
            w.add_tensor(f"blk.{i}.{gguf_name}.weight", np.ascontiguousarray(x))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _lora_source_digest(adapter_dir: Path, base_gguf: Path) -> str:
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        h.update(name.encode())
        h.update((adapter_dir / name).read_bytes())
    st = base_gguf.stat()
    h.update(f"{base_gguf.resolve()}:{st.st_size}".encode())
    return h.hexdigest()


def export_lora_gguf(
    adapter_dir: str | os.PathLike[str],
    base_gguf: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Export a PEFT LoRA adapter (q/k/v/o/gate/up/down projections) to a llama.cpp GGUF LoRA
    for ``base_gguf``; reused when the adapter and base are unchanged. Returns its path."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    adapter_dir, base_gguf = Path(adapter_dir), Path(base_gguf)
    # beside the adapter, not inside it: the adapter directory's content is its identity
    # (hashed by the evaluation's resume check), so the export must not change it
    out = Path(out) if out is not None else adapter_dir.with_name(adapter_dir.name + ".lora.gguf")
    digest = _lora_source_digest(adapter_dir, base_gguf)
    stamp = out.with_name(out.name + ".source.json")
    if out.is_file() and stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("source_sha256") == digest:
                return out
        except ValueError:
            pass

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    meta = read_metadata(base_gguf)
    arch = str(meta["architecture"])
    r = int(cfg["r"])
    alpha = float(cfg.get("lora_alpha", r))
    if cfg.get("use_rslora"):
        alpha = alpha * r ** 0.5  # rsLoRA scales by alpha / sqrt(r); llama.cpp by alpha / r
    if cfg.get("use_dora"):
        raise ValueError("DoRA adapters have no llama.cpp GGUF form; train plain LoRA")
    sd = load_file(adapter_dir / "adapter_model.safetensors")
    pairs: dict[tuple[int, str], dict[str, Any]] = {}
    for key, value in sd.items():
        m = _LORA_KEY.search(key)
        if m is None:
            raise ValueError(
                f"adapter tensor {key!r} is not a LoRA on a decoder-layer projection; "
                "the llama.cpp export supports q/k/v/o/gate/up/down projections only"
            )
        pairs.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = value
    heads = {"self_attn.q_proj": meta["head_count"], "self_attn.k_proj": meta["head_count_kv"]}

    tmp = out.with_name(out.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", alpha)
    for (layer, module), ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ValueError(f"layer {layer} {module}: LoRA A or B missing")
        a = np.ascontiguousarray(ab["A"].astype(np.float32))  # (r, in)
        b = ab["B"].astype(np.float32)  # (out, r)
        if arch in _PERMUTED_QK and module in heads:
            b = permute_qk(b, int(heads[module]))
        name = f"blk.{layer}.{LAYER_TENSORS[module]}.weight"
        w.add_tensor(f"{name}.lora_a", a)
        w.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)
    stamp.write_text(json.dumps({"source_sha256": digest, "base_gguf": str(base_gguf),
                                 "alpha": alpha, "rank": r, "tensors": 2 * len(pairs)}) + "\n")
    return out


__all__ = ["LAYER_TENSORS", "export_lora_gguf", "permute_qk", "read_metadata", "write_llama_gguf"]
