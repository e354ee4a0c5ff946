"""Fine-tuning a reranker: a cross-encoder (sentence-transformers) or Qwen3-Reranker with LoRA (peft).

Input is plain groups ``(query, positive passage, [hard negative passages])``; the caller (``sieve train
reranker``) mines the negatives. This package sees no retrieval or API types.

cross-encoder: ``CrossEncoder`` + ``CrossEncoderTrainer``, ``BinaryCrossEntropyLoss`` over (query, passage,
    1/0) pairs, ``pos_weight`` = negatives per positive so both classes weigh the same. Pointwise BCE, not a
    listwise loss, because Sieve reads the cross-encoder's sigmoid(logit) as a probability (review thresholds,
    score fusion): BCE keeps that scale calibrated, a listwise loss (LambdaLoss, ListNet) only fixes order.
    Whether the result helps is for the held-out eval to show (FACTS: a small model can get worse).
qwen3: LoRA adapters on the attention and MLP projections of the causal LM; each pair goes through exactly
    Sieve's template (``Qwen3Reranker.prepare``, the first window of a long document); the loss is the cross
    entropy of the ["no", "yes"] logits at the last position against the label, i.e. of the P(yes) that
    ``Qwen3Reranker`` serves. On save the adapters are merged, so the output is a plain causal-LM folder.

Checkpoints every ``save_steps`` into ``checkpoint_dir`` (cross-encoder: the HF trainer's; qwen3:
``step-N/`` with the adapter, optimizer, scheduler and step); ``resume=True`` continues from the newest one.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.prompts import QWEN3_RERANKER_INSTRUCTION
from reranking.backends.qwen3 import Qwen3Reranker, _left_pad

logger = logging.getLogger(__name__)

Group = tuple[str, str, Sequence[str]]  # query, positive, hard negatives
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class RerankerTrainConfig:
    epochs: float = 1.0
    batch_size: int = 16  # cross-encoder: pairs per batch; qwen3: groups per batch
    learning_rate: float = 2e-5
    max_steps: int = -1
    save_steps: int = 50
    seed: int = 0
    device: str = "cpu"
    lora_r: int = 16
    max_tokens: int = 512
    instruction: str = QWEN3_RERANKER_INSTRUCTION


def reranker_kind(base: str) -> str | None:
    """``qwen3`` or ``cross-encoder`` from a local folder's ``config.json``; None when it cannot tell."""
    config = Path(base).expanduser() / "config.json"
    if not config.is_file():
        return None
    return (
        "qwen3"
        if json.loads(config.read_text(encoding="utf-8")).get("model_type") == "qwen3"
        else "cross-encoder"
    )


def _pairs(groups: Sequence[Group]) -> list[tuple[str, str, int]]:
    return [(q, d, label) for q, pos, negs in groups for d, label in [(pos, 1), *((n, 0) for n in negs)]]


def train_cross_encoder(
    base: str,
    groups: Sequence[Group],
    output_dir: Path,
    checkpoint_dir: Path,
    config: RerankerTrainConfig,
    *,
    resume: bool = False,
) -> dict[str, Any]:
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers.trainer_utils import get_last_checkpoint

    started = time.perf_counter()
    pairs = _pairs(groups)
    model = CrossEncoder(base, num_labels=1, device=config.device, max_length=config.max_tokens)
    negatives = sum(1 for p in pairs if p[2] == 0)
    pos_weight = torch.tensor(max(1.0, negatives / max(1, len(pairs) - negatives)))
    dataset = Dataset.from_dict(
        {
            "query": [p[0] for p in pairs],
            "passage": [p[1] for p in pairs],
            "label": [float(p[2]) for p in pairs],
        }
    )
    args = CrossEncoderTrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=0.1,  # a float below 1: a fraction of the steps (transformers 5)
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=max(1, min(10, config.save_steps)),
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=config.device == "cpu",
        report_to="none",
        disable_tqdm=False,
    )
    loss = BinaryCrossEntropyLoss(model, pos_weight=pos_weight)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    checkpoint = get_last_checkpoint(str(checkpoint_dir)) if resume and checkpoint_dir.is_dir() else None
    result = trainer.train(resume_from_checkpoint=checkpoint)
    model.save(str(output_dir))
    return {
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "pairs": len(pairs),
        "pos_weight": float(pos_weight),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _batches(groups: Sequence[Group], config: RerankerTrainConfig) -> list[list[tuple[str, str, int]]]:
    """Every epoch's groups in a seeded order, cut into batches of ``batch_size`` groups (as pairs)."""
    rng = random.Random(config.seed)
    epochs = max(1, int(-(-config.epochs // 1)))
    batches = []
    for _ in range(epochs):
        order = list(range(len(groups)))
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            batches.append(_pairs([groups[i] for i in order[start : start + config.batch_size]]))
    limit = (
        round(len(groups) / config.batch_size * config.epochs + 0.4999)
        if config.max_steps < 0
        else config.max_steps
    )
    return batches[: max(1, limit)]


def _qwen3_loss(model: Any, template: Qwen3Reranker, batch: list[tuple[str, str, int]], device: str) -> Any:
    sequences = [template.prepare(q, [d])[0][0] for q, d, _ in batch]
    ids, mask, positions = _left_pad(sequences, template._pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits
    pair = logits[:, -1, list(template.head_token_ids)].float()  # (batch, 2): "no", "yes"
    labels = torch.tensor([label for _, _, label in batch], device=pair.device)
    return torch.nn.functional.cross_entropy(pair, labels)


def _latest_step(checkpoint_dir: Path) -> Path | None:
    steps = sorted(checkpoint_dir.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return steps[-1] if steps else None


def train_qwen3_reranker(
    base: str,
    groups: Sequence[Group],
    output_dir: Path,
    checkpoint_dir: Path,
    config: RerankerTrainConfig,
    *,
    resume: bool = False,
) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    template = Qwen3Reranker(base, max_tokens=config.max_tokens, default_instruction=config.instruction)
    template.load_template()
    dtype = torch.bfloat16 if config.device.startswith("cuda") else torch.float32
    causal: Any = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    causal = causal.to(config.device)
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=2 * config.lora_r, lora_dropout=0.05, target_modules=LORA_TARGETS
    )
    model = get_peft_model(causal, lora)
    batches = _batches(groups, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    warmup = max(1, len(batches) // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (len(batches) - s) / max(1, len(batches) - warmup))),
    )
    start, resumed = 0, None
    latest = _latest_step(checkpoint_dir) if resume and checkpoint_dir.is_dir() else None
    if latest is not None:
        set_peft_model_state_dict(model, load_file(str(latest / "adapter_model.safetensors")))
        state = torch.load(latest / "state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        start, resumed = int(state["step"]), latest.name
        logger.info("resuming from %s", latest)
    model.train()
    losses: list[float] = []
    for step in tqdm(range(start, len(batches)), initial=start, total=len(batches), desc="qwen3 LoRA"):
        loss = _qwen3_loss(model, template, batches[step], config.device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if (step + 1) % config.save_steps == 0 and step + 1 < len(batches):
            target = checkpoint_dir / f"step-{step + 1}"
            model.save_pretrained(str(target))
            state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(),
                "step": step + 1,
            }
            torch.save(state, target / "state.pt")
    merged: Any = model.merge_and_unload()
    merged.save_pretrained(str(output_dir))
    template._tokenizer.save_pretrained(str(output_dir))
    return {
        "steps": len(batches),
        "train_loss": sum(losses) / len(losses) if losses else None,
        "resumed_from": resumed,
        "pairs": sum(len(b) for b in batches),
        "seconds": round(time.perf_counter() - started, 1),
    }


def train_reranker(
    kind: str,
    base: str,
    groups: Sequence[Group],
    output_dir: Path,
    checkpoint_dir: Path,
    config: RerankerTrainConfig,
    *,
    resume: bool = False,
) -> dict[str, Any]:
    if not groups:
        raise ValueError("no training groups: every query needs a positive passage")
    output_dir.mkdir(parents=True, exist_ok=True)
    if kind == "qwen3":
        return train_qwen3_reranker(base, groups, output_dir, checkpoint_dir, config, resume=resume)
    if kind == "cross-encoder":
        return train_cross_encoder(base, groups, output_dir, checkpoint_dir, config, resume=resume)
    raise ValueError(f"unknown reranker kind {kind!r}: use cross-encoder or qwen3")
