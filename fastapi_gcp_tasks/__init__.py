"""Strongly typed background tasks and cron jobs for FastAPI on Google Cloud Tasks and Cloud Scheduler."""
