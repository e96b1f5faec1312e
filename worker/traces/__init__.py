"""The trace bus: trace records from inference workers to trainers over a bounded Redis Stream.

Torch-free: the serving side only exports, the trainer consumes, replays and watches drift.
"""
