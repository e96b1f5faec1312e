"""Proposal trees: every speculative source (n-gram lookup, draft chain, draft tree) becomes one trie.

Node 0 is the root: the last emitted token, not yet in the target's KV cache. Sharing prefixes
lets several proposers be verified in one target forward for the price of their union.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ProposalTree:
    tokens: list[int]
    parents: list[int] = field(default_factory=lambda: [-1])
    depths: list[int] = field(default_factory=lambda: [0])
    children: list[dict[int, int]] = field(default_factory=lambda: [{}])

    @classmethod
    def root(cls, token: int) -> ProposalTree:
        return cls(tokens=[token])

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, parent: int, token: int) -> int:
        """Child ``token`` under ``parent`` (reusing an existing one); returns its node index."""
        existing = self.children[parent].get(token)
        if existing is not None:
            return existing
        node = len(self.tokens)
        self.tokens.append(token)
        self.parents.append(parent)
        self.depths.append(self.depths[parent] + 1)
        self.children.append({})
        self.children[parent][token] = node
        return node

    def add_path(self, tokens: list[int], budget: int, parent: int = 0) -> list[int]:
        """Insert a chain below ``parent`` while the tree has fewer than ``budget`` nodes."""
        nodes = []
        for token in tokens:
            if token not in self.children[parent] and len(self) >= budget:
                break
            parent = self.add(parent, token)
            nodes.append(parent)
        return nodes

    def ancestor_mask(self) -> torch.Tensor:
        """``mask[i, j]``: node ``j`` is ``i`` or one of its ancestors (what ``i`` may attend to)."""
        size = len(self)
        mask = torch.zeros(size, size, dtype=torch.bool)
        for node in range(size):
            parent = self.parents[node]
            if parent >= 0:
                mask[node] = mask[parent]
            mask[node, node] = True
        return mask
