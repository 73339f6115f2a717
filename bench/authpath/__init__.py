"""What API keys cost a request: the guarded fast path against h11, in process."""
