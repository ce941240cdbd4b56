"""The console example: tasks that succeed, fail and give up, with task history and the console mounted."""
