"""Framework adapters: FastAPI/ASGI, Flask/WSGI, gRPC server, auto-instrumentation."""

__all__: list[str] = []
