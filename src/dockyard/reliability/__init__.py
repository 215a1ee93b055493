"""Keeping the service up: the worker supervisor."""
