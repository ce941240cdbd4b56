"""Declared cron jobs: a billing app whose schedules are planned and synced by the CLI."""
