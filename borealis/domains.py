"""Traffic domain labels are operator-set: a client's label outside the allowlist counts as ``other``.

Every place that keys something by domain (Prometheus series, held-out sets, drift windows, replay
balance) sees only allowlisted labels, so a client inventing labels cannot grow any of them.
"""

from __future__ import annotations

OTHER = "other"
MAX_DOMAINS = 32  # labels, ``other`` included: well under what a drift report may carry


def parse_allowlist(spec: str) -> frozenset[str]:
    """``"code,prose"`` → the set of labels, always including ``other``."""
    labels = frozenset(label.strip() for label in spec.split(",") if label.strip()) | {OTHER}
    if len(labels) > MAX_DOMAINS:
        raise ValueError(f"at most {MAX_DOMAINS} domain labels, `other` included; got {len(labels)}")
    return labels


def canonical_domain(label: str | None, allowed: frozenset[str]) -> str | None:
    """The label if the operator allows it, ``other`` if not, None when the caller gave none."""
    if label is None:
        return None
    return label if label in allowed else OTHER
