"""Durable storage behind a small interface (``base.Store``)."""
