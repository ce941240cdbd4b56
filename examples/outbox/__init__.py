"""Outbox mode: an order and its receipt task commit together, or not at all."""
