"""The amoCRM stub passes the contract kit: it journals in the store, the kit's default observe."""

from __future__ import annotations

from connector_core.testing import PluginContract

pytest_plugins = ["connector_core.testing"]


class TestAmoCrmStubContract(PluginContract):
    plugin = "amocrm_stub"
    valid_settings = [
        {},
        {"subdomain": "acme", "pipeline_id": 7, "users": {"101": 11, "102": 12}},
        {"subdomain": "acme-2", "default_responsible": 11},
    ]
    invalid_settings = [
        ({"subdomain": "Not A Subdomain"}, "subdomain"),
        ({"pipeline_id": "funnel"}, "pipeline_id"),
        ({"users": {"101": "anna"}}, "users.101"),
        ({"users": ["101"]}, "users"),
    ]
    # The stub has no credentials (it makes no requests): the secret tests skip with a reason.
