"""connector: Sipuni PBX webhooks in, CRM plugins out."""

from connector_core.hookspecs import hookimpl

__all__ = ["hookimpl"]
__version__ = "0.1.0"
