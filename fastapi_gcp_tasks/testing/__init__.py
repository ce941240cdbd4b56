"""Helpers for testing apps that use fastapi-gcp-tasks."""
