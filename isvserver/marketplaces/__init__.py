"""Adapters: one package per marketplace wire protocol, all over the same lifecycle core."""
