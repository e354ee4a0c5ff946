"""Where model weights come from: the hub switch, local folders, and a model's identity and revision.

No torch here: the stage packages' settings and the API use these without loading a model.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

MODEL_CARD = "sieve-model.json"  # written by ``sieve train`` into the model folder it makes
_SNAPSHOT = re.compile(r"snapshots[/\\]([0-9a-f]{40})")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value (read at call time)."""
    values = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(v.strip().upper() in {"1", "ON", "YES", "TRUE"} for v in values)


def offline_kwargs(model: str) -> dict[str, Any]:
    """``local_files_only`` for a hub id while the hub is switched off, so a miss fails at once."""
    return {"local_files_only": True} if hub_offline() and not os.path.isdir(model) else {}


def model_identity(model: str) -> str:
    """A stable name for a model: the folder's name for a local path, the hub id otherwise."""
    if os.path.isdir(model):
        return os.path.basename(os.path.normpath(os.path.abspath(model)))
    return model


def model_revision(model: str) -> str | None:
    """The revision of a model reference: ``revision`` of a trained folder's ``sieve-model.json``, or the
    hub commit of a hub snapshot folder; None when neither says (a plain folder, a bare hub id)."""
    if not model:
        return None
    card = Path(model) / MODEL_CARD
    try:
        revision = json.loads(card.read_text(encoding="utf-8")).get("revision")
    except (OSError, ValueError, AttributeError):
        revision = None
    if revision:
        return str(revision)
    found = _SNAPSHOT.search(model)
    return found.group(1) if found else None
