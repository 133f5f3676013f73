"""The ``[console]`` section of the config: off unless enabled, with a password hash."""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from connector_core.console.auth import HashFormatError, parse_hash
from connector_core.phones import PhoneFormat

Language = Literal["ru", "en"]


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError(
            "timezone", "expected an IANA time zone, e.g. Europe/Moscow or Asia/Almaty"
        ) from None
    return value


class ConsoleConfig(BaseModel):
    """``[console]``: the operator console at ``/console/`` (docs/console.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Serve the console at /console/.")
    password_hash: SecretStr | None = Field(
        None,
        validate_default=True,
        description="The operator's password (or token) hash, from `connector console-password`.",
    )
    allow_remote: bool = Field(
        False,
        description="Answer clients other than this machine (put it behind HTTPS and set "
        "server.public_url); off: only loopback clients not coming through a proxy.",
    )
    language: Language = Field("ru", description="The UI language: ru or en.")
    timezone: Annotated[str, AfterValidator(_check_zone)] = Field(
        "Europe/Moscow", description="Time zone the pages show times in."
    )
    phone_format: PhoneFormat | None = Field(
        None,
        description="How numbers are shown; by default as the account's first integration with "
        "a phone_format setting writes them, else +7XXXXXXXXXX.",
    )
    session_hours: float = Field(
        12, gt=0, le=24 * 30, description="A login lasts this long without a visit."
    )

    @field_validator("password_hash")
    @classmethod
    def _hash_when_enabled(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            if info.data.get("enabled"):
                # "missing": the config's error report then names the key, absent from the file.
                raise PydanticCustomError(
                    "missing",
                    "the console is enabled but has no password hash: run `connector"
                    " console-password` and put the line it prints here",
                )
            return None
        try:
            parse_hash(value.get_secret_value())
        except HashFormatError as exc:
            raise PydanticCustomError("password_hash", str(exc)) from None
        return value
