"""Fine-tuning a dense embedder: sentence-transformers' trainer, in-batch and mined hard negatives.

Input is plain rows ``(query, positive passage, [hard negative passages])`` (the caller mines the negatives
with the base model; see ``api.training_data.mine_negatives``). The loss is ``MultipleNegativesRankingLoss``:
each query against its positive, every other positive of the batch (in-batch negatives) and the hard
negatives of the whole batch. Batches never hold the same text twice (``NO_DUPLICATES``), so a query's own
positive is never counted as another query's negative.

Two kinds of base:

    sentence-transformers folder or hub id (default: the bundled all-MiniLM-L6-v2): every weight trains; the
        output folder is a sentence-transformers folder (``SentenceTransformerEmbedder`` loads it).
    Qwen3-Embedding (a folder whose ``config.json`` says ``model_type: qwen3``): LoRA adapters (peft) on the
        attention and MLP projections, with the recipe of ``retrieval.backends.qwen3`` (query instruction,
        ``<|endoftext|>`` appended, left padding, last-token pooling, L2 normalisation). On save the adapters
        are merged into the weights, so the output is a plain ``Qwen3Model`` folder for ``Qwen3Embedder``.

Checkpoints go to ``checkpoint_dir`` every ``save_steps`` steps (the last two kept); ``resume=True`` continues
from the newest one there (the trainer restores optimizer, scheduler, RNG and the data position).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.prompts import QWEN3_EMBEDDING_INSTRUCTION, format_query
from retrieval.backends.qwen3 import EOS_TOKEN
from retrieval.backends.sentence_transformers import _bundled_model_path

logger = logging.getLogger(__name__)

TrainRow = tuple[str, str, Sequence[str]]  # query, positive, hard negatives
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class EmbedderTrainConfig:
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 2e-5
    max_steps: int = -1
    warmup_ratio: float = 0.1
    save_steps: int = 50
    seed: int = 0
    device: str = "cpu"
    lora_r: int = 16
    max_seq_length: int | None = None
    instruction: str = QWEN3_EMBEDDING_INSTRUCTION


def resolve_base(base: str | None) -> str:
    """The base model reference: the bundled MiniLM folder when none is given."""
    return str(_bundled_model_path()) if base is None else base


def is_qwen3(base: str) -> bool:
    """True for a local folder whose ``config.json`` names ``model_type: qwen3``."""
    config = Path(base).expanduser() / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "qwen3"


def last_checkpoint(checkpoint_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(checkpoint_dir)) if Path(checkpoint_dir).is_dir() else None


def _load_model(base: str, config: EmbedderTrainConfig) -> tuple[Any, bool]:
    from sentence_transformers import SentenceTransformer

    if not is_qwen3(base):
        model = SentenceTransformer(base, device=config.device)
        return model, False
    from peft import LoraConfig
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    transformer = Transformer(base, max_seq_length=config.max_seq_length or 512)
    transformer.tokenizer.padding_side = "left"
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device=config.device)
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=2 * config.lora_r, lora_dropout=0.05, target_modules=LORA_TARGETS
    )
    model.add_adapter(lora)
    return model, True


def _qwen3_text(tokenizer: Any, text: str, limit: int) -> str:
    """The recipe's input as text: at most ``limit - 1`` tokens of ``text``, then ``<|endoftext|>``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > limit - 1:
        text = tokenizer.decode(ids[: limit - 1])
    return text + EOS_TOKEN


def _dataset(rows: Sequence[TrainRow], model: Any, qwen3: bool, config: EmbedderTrainConfig) -> Any:
    from datasets import Dataset

    count = min((len(r[2]) for r in rows), default=0)
    columns: dict[str, list[str]] = {"anchor": [], "positive": []}
    columns.update({f"negative_{i + 1}": [] for i in range(count)})
    tokenizer = model.tokenizer
    limit = int(model.max_seq_length or 512)
    for query, positive, negatives in rows:
        texts = [query, positive, *list(negatives)[:count]]
        if qwen3:
            texts[0] = format_query(query, config.instruction)
            texts = [_qwen3_text(tokenizer, t, limit) for t in texts]
        for name, text in zip(columns, texts, strict=True):
            columns[name].append(text)
    return Dataset.from_dict(columns)


def merge_lora(model: Any) -> Any:
    """Merge every LoRA layer into its base weights and drop the adapters; returns the plain model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    model._hf_peft_config_loaded = False  # save_pretrained then writes the full (merged) weights
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


def train_embedder(
    base: str,
    rows: Sequence[TrainRow],
    output_dir: Path,
    checkpoint_dir: Path,
    config: EmbedderTrainConfig,
    *,
    resume: bool = False,
) -> dict[str, Any]:
    """Train on ``rows`` and save the model into ``output_dir``; returns what happened (steps, loss, time)."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    if not rows:
        raise ValueError("no training rows: every query needs a positive passage")
    started = time.perf_counter()
    model, qwen3 = _load_model(base, config)
    serving_length = model.max_seq_length
    if config.max_seq_length and not qwen3:
        model.max_seq_length = config.max_seq_length  # training only: the saved model keeps its own
    dataset = _dataset(rows, model, qwen3, config)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float below 1: a fraction of the steps (transformers 5)
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=max(1, min(10, config.save_steps)),
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=config.device == "cpu",
        report_to="none",
        disable_tqdm=False,
        dataloader_drop_last=False,
    )
    loss = MultipleNegativesRankingLoss(model)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    checkpoint = last_checkpoint(checkpoint_dir) if resume else None
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    output_dir.mkdir(parents=True, exist_ok=True)
    if qwen3:
        merged = merge_lora(model[0].auto_model)
        merged.save_pretrained(str(output_dir))
        tokenizer = model.tokenizer
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(str(output_dir))
    else:
        model.max_seq_length = serving_length
        model.save(str(output_dir))
    return {
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "rows": len(rows),
        "hard_negatives_per_row": len(dataset.column_names) - 2,
        "lora": qwen3,
        "seconds": round(time.perf_counter() - started, 1),
    }
