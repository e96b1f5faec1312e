"""Entry points above everything they start: the ``borealis`` command and ``borealis up``'s supervisor."""
