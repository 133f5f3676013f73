"""A faithful in-memory Usedesk REST API for tests and demos (see docs/usedesk-sandbox.md).

sandbox = UsedeskSandbox()                       # default seed, token "sandbox-token"
async with sandbox.serve() as base_url:          # http://127.0.0.1:<port>
    ...
client = await aiohttp_client(create_app(sandbox))  # pytest-aiohttp
"""

from .app import SANDBOX_KEY, create_app
from .core import ENDPOINTS, LoggedRequest, UsedeskSandbox
from .faults import FaultConfigError, FaultPlan, RateObserver
from .model import STATUS_NAMES, STATUS_NEW, STATUS_OPEN, SandboxState
from .params import ApiError
from .seed import DEFAULT_SEED, DEFAULT_TOKEN, SeedError, build_state, load_seed
from .server import serve_sandbox

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_TOKEN",
    "ENDPOINTS",
    "SANDBOX_KEY",
    "STATUS_NAMES",
    "STATUS_NEW",
    "STATUS_OPEN",
    "ApiError",
    "FaultConfigError",
    "FaultPlan",
    "LoggedRequest",
    "RateObserver",
    "SandboxState",
    "SeedError",
    "UsedeskSandbox",
    "build_state",
    "create_app",
    "load_seed",
    "serve_sandbox",
]
