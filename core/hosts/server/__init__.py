"""`ganvas serve`: the pipeline behind the OpenAI Images API (see docs/server.md).

    from ganvas.core.hosts.server import ServerConfig, create_app, serve
    serve(ServerConfig(port=8000))          # blocks; SIGINT/SIGTERM shut down gracefully

Modules: config (settings + safety rule), schemas (request/response models), validation (checks
beyond the schema), app (routes), state (what routes share, queueing a job), errors
(OpenAI error shape), workers (bounded queue + fixed threads), store (url images), hub (model lookup),
jobs (what a worker runs), middleware (access log, API key, body limit), protocol (HTTP deadlines and
connection limits against slow clients), runner (uvicorn + signals),
background (the real server in a thread, for tests and embedding hosts).
"""

from ganvas.core.hosts.server.config import ServerConfig, ServerConfigError

__all__ = ["ServerConfig", "ServerConfigError", "create_app", "serve"]


def __getattr__(name):
    # Lazy: `ganvas serve --help` and the config check must not import FastAPI or torch.
    if name == "create_app":
        from ganvas.core.hosts.server.app import create_app

        return create_app
    if name == "serve":
        from ganvas.core.hosts.server.runner import serve

        return serve
    raise AttributeError(name)
