"""What a user would build instead of batchgate: Celery and arq behind one small ASGI endpoint."""
