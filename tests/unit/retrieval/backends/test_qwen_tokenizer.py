"""The offline Qwen3 tokenizer built from ``qwen-tokenizer`` gives the real Qwen3 token ids."""

from __future__ import annotations

import pytest

from retrieval.backends.qwen_tokenizer import SPECIAL_START_ID, SPECIAL_TOKENS, VOCAB_SIZE


def test_known_token_ids(qwen_tokenizer) -> None:
    assert qwen_tokenizer.convert_tokens_to_ids("yes") == 9693
    assert qwen_tokenizer.convert_tokens_to_ids("no") == 2152
    assert qwen_tokenizer("Hello world")["input_ids"] == [9707, 1879]
    # The reranker prefix starts like this in the official tokenizer; no BOS is added.
    assert qwen_tokenizer.encode("<|im_start|>system\n", add_special_tokens=False) == [151644, 8948, 198]


def test_vocabulary_and_special_tokens(qwen_tokenizer) -> None:
    assert len(qwen_tokenizer) == VOCAB_SIZE == 151669
    assert len(SPECIAL_TOKENS) == 26
    for offset, token in enumerate(SPECIAL_TOKENS):
        assert qwen_tokenizer.convert_tokens_to_ids(token) == SPECIAL_START_ID + offset
    assert qwen_tokenizer.convert_tokens_to_ids("</think>") == 151668
    assert qwen_tokenizer.eos_token == qwen_tokenizer.pad_token == "<|endoftext|>"
    assert qwen_tokenizer.eos_token_id == 151643
    # Special tokens inside a text are single tokens, not spelled out.
    assert qwen_tokenizer("hi<|endoftext|>")["input_ids"] == [6023, 151643]


def test_matches_tiktoken_on_mixed_text(qwen_tokenizer) -> None:
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    from retrieval.backends.qwen_tokenizer import QWEN_PATTERN, qwen_tiktoken_file

    specials = {token: SPECIAL_START_ID + i for i, token in enumerate(SPECIAL_TOKENS)}
    reference = tiktoken.Encoding(
        "qwen3",
        pat_str=QWEN_PATTERN,
        mergeable_ranks=load_tiktoken_bpe(str(qwen_tiktoken_file())),
        special_tokens=specials,
    )
    text = "Hello world! 12345 中文分词测试 def f(x):\n    return x**2  \n\n<|im_end|> café naïve\t'll"
    ids = qwen_tokenizer.encode(text, add_special_tokens=False)
    assert ids == reference.encode(text, allowed_special="all")
    assert qwen_tokenizer.decode(ids) == text
