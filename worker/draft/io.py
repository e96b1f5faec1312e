"""Draft artifacts: ``draft.safetensors`` plus ``manifest.json`` (architecture, vocabulary, lineage, sha256).

Safetensors only, never pickle: artifacts travel between machines and are loaded by serving workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from borealis.files import sha256_file
from borealis.wire import MANIFEST_FILE, WEIGHTS_FILE
from worker.draft.model import ARCHITECTURE, DraftConfig, Eagle3Draft
from worker.draft.vocab import DraftVocab

FORMAT = "borealis-draft"
FORMAT_VERSION = 1
VOCAB_TENSOR = "vocab.draft_to_target"


class DraftArtifactError(ValueError):
    """The directory does not hold a loadable, intact draft."""


@dataclass(frozen=True)
class DraftManifest:
    version: str | None
    parent_version: str | None
    sha256: str
    config: DraftConfig
    extra: dict[str, object]


def save_draft(
    draft: Eagle3Draft,
    out_dir: Path | str,
    version: str | None = None,
    parent_version: str | None = None,
    extra: dict[str, object] | None = None,
) -> DraftManifest:
    """Write the weights, then the manifest: a complete manifest means a complete artifact."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: param.detach().contiguous() for name, param in draft.named_parameters()}
    tensors[VOCAB_TENSOR] = draft.vocab.draft_to_target.contiguous()
    save_file(tensors, str(out / WEIGHTS_FILE))
    manifest = DraftManifest(
        version, parent_version, sha256_file(out / WEIGHTS_FILE), draft.config, extra or {}
    )
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": draft.config.architecture,
        "config": draft.config.to_dict(),
        "vocab": {
            "tensor": VOCAB_TENSOR,
            "draft_vocab_size": draft.vocab.size,
            "target_vocab_size": draft.vocab.target_vocab_size,
        },
        "version": version,
        "parent_version": parent_version,
        "weights_file": WEIGHTS_FILE,
        "sha256": manifest.sha256,
        "extra": manifest.extra,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(document, indent=2, sort_keys=True))
    return manifest


def read_manifest(path: Path | str) -> DraftManifest:
    try:
        document = json.loads((Path(path) / MANIFEST_FILE).read_text())
        if document.get("format") != FORMAT or document.get("format_version") != FORMAT_VERSION:
            raise DraftArtifactError(f"unknown draft format {document.get('format')!r}")
        if document.get("architecture") != ARCHITECTURE:
            raise DraftArtifactError(f"unsupported draft architecture {document.get('architecture')!r}")
        config = DraftConfig(**document["config"])
        return DraftManifest(
            document.get("version"),
            document.get("parent_version"),
            str(document["sha256"]),
            config,
            dict(document.get("extra") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, DraftArtifactError):
            raise
        raise DraftArtifactError(f"unreadable draft manifest in {path}: {exc}") from exc


def load_draft(path: Path | str) -> tuple[Eagle3Draft, DraftManifest]:
    """Load and check a draft artifact (sha256 of the weights must match the manifest)."""
    directory = Path(path)
    manifest = read_manifest(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file() or sha256_file(weights) != manifest.sha256:
        raise DraftArtifactError(f"{weights} is missing or does not match the manifest sha256")
    tensors = load_file(str(weights))
    vocab = DraftVocab(tensors.pop(VOCAB_TENSOR), manifest.config.target_vocab_size)
    draft = Eagle3Draft(manifest.config, vocab)
    missing, unexpected = draft.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise DraftArtifactError(
            f"draft weights do not fit the config: missing={missing} unexpected={unexpected}"
        )
    draft.requires_grad_(False)
    return draft, manifest
