"""Tiny model folders built on the spot (offline, fixed seeds), for tests in any tier."""

from __future__ import annotations

from pathlib import Path

# The Qwen3-0.6B shape (Qwen3-Reranker-0.6B / Qwen3-Embedding-0.6B): random weights of it run the real code
# path at full size (GPU tests and benchmarks); no checkpoint needed.
QWEN3_06B = {
    "vocab_size": 151669,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "initializer_range": 0.02,
}

# The 4B and 8B shapes (Qwen3-Reranker/Embedding-4B and -8B): the published Qwen3-4B / Qwen3-8B config.json
# values (no checkpoint here to read them from; a third-party port of Qwen3-Embedding-8B lists the same
# hidden/intermediate/layers/heads). Both have 8 key/value heads for 32 query heads (grouped-query group 4,
# where 0.6B has 2) and a q/k/v width (6144) unlike the hidden width. The vocabulary is the tokenizer's
# 151,669 (published configs say 151,669, 151,665 or the padded 151,936 by model: <0.2 % of the embeddings).
QWEN3_4B = {
    **QWEN3_06B,
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": True,
}
QWEN3_8B = {
    **QWEN3_4B,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "tie_word_embeddings": False,  # its own LM head: the reranker's two rows come from lm_head, not embed
}
SIZES = {"0.6b": QWEN3_06B, "4b": QWEN3_4B, "8b": QWEN3_8B}

# The same wiring at toy size (2 layers, hidden 64), for CPU tests and smoke runs. ``initializer_range`` 0.2
# makes scores spread (P("yes") well away from 0.5), so a wrong input shows in the numbers.
TINY_QWEN3 = {
    **QWEN3_06B,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "initializer_range": 0.2,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
}

# Toy configs with each real size's ratios, for CPU tests of what differs between sizes: grouped-query
# group 4 (4B/8B: 32 heads on 8 key/value heads), a q/k/v width unlike the hidden width, and (8B) an untied
# LM head.
TINY_SIZES = {
    "0.6b": TINY_QWEN3,
    "4b": {**TINY_QWEN3, "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 8,
           "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 3},
    "8b": {**TINY_QWEN3, "hidden_size": 128, "intermediate_size": 384, "num_attention_heads": 8,
           "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 3, "tie_word_embeddings": False},
}  # fmt: skip


def build_qwen3_folder(
    target: Path, *, head: str, tokenizer_dir: Path, config: dict[str, object], seed: int = 0
) -> Path:
    """A Qwen3 model folder with random weights (``seed``) and the tokenizer of ``tokenizer_dir``:
    ``head="embedding"`` a ``Qwen3Model`` (no LM head, as Qwen3-Embedding ships), ``head="reranker"`` a
    ``Qwen3ForCausalLM`` (tied LM head, as Qwen3-Reranker). Saved in bf16 when the model is larger than a
    toy, as the published checkpoints are. Reused when ``target`` already holds one."""
    if (target / "config.json").exists():
        return target
    import shutil

    import torch
    import transformers

    if head not in ("embedding", "reranker"):
        raise ValueError(f"head must be embedding or reranker, not {head!r}")
    torch.manual_seed(seed)
    qwen = transformers.Qwen3Config(**config)
    model = (transformers.Qwen3Model if head == "embedding" else transformers.Qwen3ForCausalLM)(qwen)
    if qwen.hidden_size >= 512:
        model = model.to(torch.bfloat16)
    model.save_pretrained(target)
    for item in Path(tokenizer_dir).iterdir():
        shutil.copy2(item, target / item.name)
    return target


def build_tiny_cross_encoder(target: Path, tokenizer_dir: Path) -> Path:
    """A one-label BERT classifier (random weights, seed 99) with the tokenizer of ``tokenizer_dir``."""
    import torch
    import transformers

    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        initializer_range=0.2,
    )
    torch.manual_seed(99)
    transformers.BertForSequenceClassification(config).save_pretrained(target)
    transformers.AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(target)
    return target
