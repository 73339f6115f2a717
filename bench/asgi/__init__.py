"""One FastAPI application on sprintd (the asgi plugin), uvicorn and hypercorn's trio worker."""
