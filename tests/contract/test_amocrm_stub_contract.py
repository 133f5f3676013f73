"""The amoCRM stub passes the contract kit: it journals in the store, the kit's default observe."""

from __future__ import annotations

from typing import ClassVar

from connector_core.testing import PluginContract


class TestAmoCrmStubContract(PluginContract):
    plugin = "amocrm_stub"
    valid_settings = (
        {},
        {"subdomain": "acme", "pipeline_id": 7, "users": {"101": 11, "102": 12}},
        {"subdomain": "acme-2", "default_responsible": 11},
    )
    invalid_settings = (
        ({"subdomain": "Not A Subdomain"}, "subdomain"),
        ({"pipeline_id": "funnel"}, "pipeline_id"),
        ({"users": {"101": "anna"}}, "users.101"),
        ({"users": ["101"]}, "users"),
    )
    secret_settings: ClassVar[dict[str, object]] = {
        "subdomain": "acme",
        "access_token": "amo-secret-token-123456",
    }
    secrets = ("amo-secret-token-123456",)
