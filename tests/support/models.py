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
