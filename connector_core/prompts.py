"""Questions for a person: asked at a terminal by ``connector init``, or answered by a script.

``Questions`` is what ``connector init`` and the plugins' ``connector_setup_integration`` hooks
ask through. Each question takes a ``parse`` function that turns the typed answer into a value
or raises ``ValueError`` with a message for the person: the message is shown and the same
question is asked again, so no code after it ever sees a bad answer. An ``Asker`` does the
I/O: ``TerminalAsker`` reads the keyboard (a secret without echo), ``ScriptedAsker`` takes its
answers from a list and keeps the transcript, so a test drives the very same questions.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
YES = frozenset({"y", "yes", "д", "да"})
NO = frozenset({"n", "no", "н", "нет"})


class Asker(Protocol):
    """The I/O under ``Questions``: one line in, text out."""

    def ask(self, prompt: str, *, secret: bool = False) -> str:
        """The line typed after ``prompt``; ``EOFError`` when no answer can come."""
        ...

    def tell(self, text: str) -> None:
        """Show ``text`` (one line or several) to the person."""
        ...


class TerminalAsker:
    """``input()`` and ``print()``; a secret is read without echo when stdin is a terminal.

    With stdin piped (a script feeding the answers) a secret is read as a plain line, since
    ``getpass`` would go to the controlling terminal instead and wait for a person; each
    answer is then printed after its prompt (a secret as ``***``), as a terminal would show it.
    """

    def ask(self, prompt: str, *, secret: bool = False) -> str:
        if sys.stdin.isatty():
            return getpass.getpass(prompt) if secret else input(prompt)
        answer = input(prompt)
        # Nothing echoes a piped answer: show it (a secret as ***), so the output reads as a log.
        print("***" if secret and answer else answer, flush=True)
        return answer

    def tell(self, text: str) -> None:
        print(text, flush=True)


class ScriptExhausted(EOFError):
    """A ``ScriptedAsker`` was asked more questions than it has answers."""


class ScriptedAsker:
    """Answers from a list, in order, for tests; ``transcript`` is what a person would see.

    A secret's answer is shown as ``***`` in the transcript, as a terminal would not echo it.
    Running out of answers raises ``ScriptExhausted`` (an ``EOFError``, as at a terminal whose
    input ended) with the transcript, so a test that answered too little says where.
    """

    def __init__(self, answers: Iterable[str]) -> None:
        self.answers = list(answers)
        self.transcript: list[str] = []  # prompts with their answers, and what was told
        self.prompts: list[str] = []
        self.told: list[str] = []
        self.secrets: list[str] = []  # the answers given to secret questions

    def ask(self, prompt: str, *, secret: bool = False) -> str:
        if not self.answers:
            raise ScriptExhausted(
                f"no scripted answer left for {prompt!r}; the transcript so far:\n"
                + "\n".join(self.transcript)
            )
        answer = self.answers.pop(0)
        self.prompts.append(prompt)
        if secret:
            self.secrets.append(answer)
        self.transcript.append(prompt + ("***" if secret and answer else answer))
        return answer

    def tell(self, text: str) -> None:
        self.told.append(text)
        self.transcript.append(text)


@dataclass(frozen=True)
class SecretAnswer:
    """A secret as typed: ``value`` to use now (check it with the CRM), ``written`` for the file.

    The two differ when the person typed ``${NAME}``: ``value`` is then the environment
    variable's, and ``written`` the reference, so the file holds no secret.
    """

    value: str = field(repr=False)
    written: str = field(repr=False)

    @property
    def from_environment(self) -> bool:
        """Whether the answer was a ``${NAME}`` reference."""
        return self.written != self.value and _ENV_REFERENCE.fullmatch(self.written) is not None

    def __repr__(self) -> str:
        return f"SecretAnswer({self.written if self.from_environment else '***'})"


class Questions:
    """Questions with checked answers: a bad answer gets its message and the question again.

    ``environ`` is where a secret answered as ``${NAME}`` is looked up (``os.environ``).
    """

    def __init__(self, asker: Asker, *, environ: Mapping[str, str] | None = None) -> None:
        self._asker = asker
        self._environ = os.environ if environ is None else environ

    @property
    def environ(self) -> Mapping[str, str]:
        """Where ``${NAME}`` answers are looked up; a config of them is read against it too."""
        return self._environ

    def tell(self, text: str) -> None:
        """Show ``text`` to the person (a heading, a list to choose from, a hint)."""
        self._asker.tell(text)

    def ask(
        self,
        prompt: str,
        parse: Callable[[str], T],
        *,
        default: str | None = None,
        secret: bool = False,
    ) -> T:
        """Ask until ``parse`` accepts the answer, and return what it made of it.

        The answer reaches ``parse`` stripped; an empty answer becomes ``default`` when there
        is one (shown in brackets). ``parse`` raises ``ValueError("what is wrong, and what
        to type")``: the message is shown, and the question asked again.
        """
        shown = f"{prompt} [{default}]: " if default else f"{prompt}: "
        while True:
            answer = self._asker.ask(shown, secret=secret).strip()
            if not answer and default is not None:
                answer = default
            try:
                return parse(answer)
            except ValueError as exc:
                self._asker.tell(f"  {exc}")

    def text(self, prompt: str, *, default: str | None = None) -> str:
        """A line that must not be empty (unless ``default`` fills it)."""
        return self.ask(prompt, required, default=default)

    def confirm(self, prompt: str, *, default: bool) -> bool:
        """Yes or no (``y``/``n``, ``да``/``нет``); Enter takes ``default``."""

        def parse(answer: str) -> bool:
            if answer.lower() in YES:
                return True
            if answer.lower() in NO:
                return False
            raise ValueError("answer y (yes) or n (no)")

        return self.ask(prompt, parse, default="y" if default else "n")

    def secret(self, prompt: str) -> SecretAnswer:
        """A secret, not echoed; ``${NAME}`` takes it from the environment variable ``NAME``.

        A literal ``${`` in a typed secret is written as ``$${``, so the config reads it back
        as typed rather than as a reference.
        """

        def parse(answer: str) -> SecretAnswer:
            if not answer:
                raise ValueError("an answer is needed (or ${NAME} for an environment variable)")
            reference = _ENV_REFERENCE.fullmatch(answer)
            if reference is None:
                return SecretAnswer(answer, answer.replace("${", "$${"))
            name = reference.group(1)
            if name not in self._environ:
                raise ValueError(
                    f"the environment variable {name} is not set: set it before running this "
                    "again, or type the value itself"
                )
            return SecretAnswer(self._environ[name], answer)

        return self.ask(prompt, parse, secret=True)


def required(answer: str) -> str:
    """``parse`` for a question that needs an answer."""
    if not answer:
        raise ValueError("an answer is needed")
    return answer


def optional(answer: str) -> str:
    """``parse`` for a question that may be left empty."""
    return answer
