"""Tiny model folders built on the spot (offline, fixed seeds), for tests in any tier."""

from __future__ import annotations

from pathlib import Path


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
