"""Every string of the console's pages, in Russian (the default) and English.

One table: a page asks for a key (``t("calls.title")``), never for a literal, so a page cannot
show a string that has no translation (``tests/core/test_console_i18n.py`` checks every key
the templates and views use). Values are plain text: the templates escape them.
"""

from __future__ import annotations

from collections.abc import Callable

from connector_core.console.settings import Language

LANGUAGES: tuple[Language, ...] = ("ru", "en")

# key: (Russian, English)
TEXT: dict[str, tuple[str, str]] = {
    # navigation
    "nav.calls": ("Звонки", "Calls"),
    "nav.integrations": ("Интеграции", "Integrations"),
    "nav.setup": ("Настройка", "Setup"),
    "nav.logout": ("Выйти", "Log out"),
    # login
    "login.title": ("Вход в консоль", "Sign in to the console"),
    "login.password": ("Пароль или токен", "Password or token"),
    "login.submit": ("Войти", "Sign in"),
    "login.hint": (
        "Пароль задаёт администратор: connector console-password.",
        "The administrator sets it with connector console-password.",
    ),
    "login.wrong": ("Неверный пароль.", "Wrong password."),
    "login.throttled": (
        "Слишком много неудачных попыток. Подождите несколько минут.",
        "Too many failed attempts. Wait a few minutes.",
    ),
    "login.expired_form": (
        "Форма устарела: обновите страницу и войдите снова.",
        "The form has expired: reload the page and sign in again.",
    ),
    # the calls page
    "calls.title": ("Звонки", "Calls"),
    "calls.time": ("Время", "Time"),
    "calls.direction": ("Направление", "Direction"),
    "calls.number": ("Номер", "Number"),
    "calls.extensions": ("Сотрудники", "Extensions"),
    "calls.outcome": ("Результат", "Outcome"),
    "calls.duration": ("Длительность", "Duration"),
    "calls.integrations": ("Интеграции", "Integrations"),
    "calls.older": ("Более ранние звонки →", "Older calls →"),
    "calls.live": (
        "Список обновляется сам каждые несколько секунд.",
        "The list updates itself every few seconds.",
    ),
    "calls.none": ("Звонков нет.", "No calls."),
    "calls.by_timeout": ("завершён по таймауту", "finished by timeout"),
    "filter.account": ("Аккаунт", "Account"),
    "filter.any": ("любой", "any"),
    "filter.phone": ("Номер клиента", "Client's number"),
    "filter.extension": ("Внутр. номер", "Extension"),
    "filter.outcome": ("Результат", "Outcome"),
    "filter.integration": ("Интеграция", "Integration"),
    "filter.status": ("Состояние", "Status"),
    "filter.period": ("Период", "Period"),
    "filter.find": ("Найти", "Find"),
    "filter.reset": ("Сбросить", "Reset"),
    "filter.bad_account": ("Такого аккаунта нет в настройках.", "No such account is configured."),
    "filter.bad_phone": (
        "Не удалось прочитать номер: введите номер целиком (в любом написании) или хотя бы"
        " 3 цифры.",
        "The number could not be read: type it whole (any spelling) or at least 3 digits.",
    ),
    "filter.bad_extension": (
        "Внутренний номер — от 1 до 8 цифр.",
        "An extension is 1 to 8 digits.",
    ),
    "filter.bad_outcome": ("Неизвестный результат.", "Unknown outcome."),
    "filter.bad_status": ("Неизвестное состояние.", "Unknown status."),
    "filter.bad_integration": (
        "Такой интеграции нет в настройках.",
        "No such integration is configured.",
    ),
    "filter.bad_period": ("Неизвестный период.", "Unknown period."),
    "period.1h": ("последний час", "last hour"),
    "period.24h": ("последние сутки", "last 24 hours"),
    "period.7d": ("последние 7 дней", "last 7 days"),
    "period.30d": ("последние 30 дней", "last 30 days"),
    "period.all": ("всё время", "all time"),
    "direction.inbound": ("Входящий", "Inbound"),
    "direction.outbound": ("Исходящий", "Outbound"),
    "direction.internal": ("Внутренний", "Internal"),
    "direction.unknown": ("Неизвестно", "Unknown"),
    "outcome.ringing": ("Звонит", "Ringing"),
    "outcome.talking": ("Разговор", "Talking"),
    "outcome.answered": ("Отвечен", "Answered"),
    "outcome.missed": ("Пропущен", "Missed"),
    "outcome.not_answered": ("Не отвечен", "Not answered"),
    "hook.done": ("готово", "done"),
    "hook.pending": ("в очереди", "pending"),
    "hook.retrying": ("повтор", "retrying"),
    "hook.dead": ("ошибка", "dead"),
    "hook.dropped": ("отменено", "dropped"),
    # one call
    "call.title": ("Звонок", "Call"),
    "call.account": ("аккаунт", "account"),
    "call.replay": ("Провести звонок заново", "Replay the call"),
    "call.replay_hint": (
        "События звонка снова проходят маршрутизацию: интеграции получат то, что им причитается;"
        " уже сделанное не повторится.",
        "The call's events go through routing again: integrations get what they are owed;"
        " nothing already done is repeated.",
    ),
    "call.events": ("События Sipuni (в порядке прихода)", "Sipuni events (in arrival order)"),
    "call.received": ("Получено", "Received"),
    "call.event": ("Событие", "Event"),
    "call.sent": ("Время события", "Event time"),
    "call.from": ("Откуда", "From"),
    "call.to": ("Куда", "To"),
    "call.scheme": ("Схема", "Scheme"),
    "call.processing": ("Обработка", "Processing"),
    "call.raw": ("как пришло", "as received"),
    "call.no_events": (
        "Событий звонка в хранилище нет.",
        "The store holds no events of this call.",
    ),
    "call.state": ("Звонок по событиям", "The call as the events tell it"),
    "call.integrations": ("Интеграции", "Integrations"),
    "call.crm_link": ("Открыть в CRM", "Open in the CRM"),
    "call.not_configured": (
        "Этой интеграции больше нет в настройках (или она выключена).",
        "This integration is no longer configured (or is disabled).",
    ),
    "call.no_hook_calls": ("Вызовов нет.", "No hook calls."),
    "call.no_integrations": ("У аккаунта нет интеграций.", "The account has no integrations."),
    "call.not_found": ("Такого звонка нет.", "There is no such call."),
    "call.call_back": ("Перезвонить", "Call back"),
    "call.call_back_from": ("с номера", "from extension"),
    "call.call_back_hint": (
        "Sipuni позвонит сначала на этот внутренний номер, затем клиенту.",
        "Sipuni rings this extension first, then the client.",
    ),
    "call.click_to_call": ("Звонки из коннектора", "Click-to-call"),
    "call.started_from": (
        "Звонок начат из коннектора («Перезвонить») по звонку",
        "Started from the connector (Call back) on call",
    ),
    "call.click_started": ("Sipuni начал звонок", "Sipuni started the call"),
    "call.click_failed": ("не удалось", "failed"),
    "event.ring": ("Звонок сотруднику", "Ringing"),
    "event.answer": ("Ответ", "Answer"),
    "event.hangup": ("Завершение", "Hang-up"),
    "event.transfer_hangup": ("Завершение при переводе", "Hang-up on transfer"),
    "event.unreadable": ("Не читается", "Unreadable"),
    "inbox.pending": ("ждёт", "waiting"),
    "inbox.done": ("обработано", "processed"),
    "inbox.quarantined": ("в карантине", "quarantined"),
    "inbox.dropped": ("отброшено", "dropped"),
    "state.client": ("Клиент", "Client"),
    "state.line": ("Линия", "Line"),
    "state.employee": ("Звонил сотрудник", "Dialled by"),
    "state.legs": ("Звонило у", "Rang at"),
    "state.from": ("от", "from"),
    "state.answers": ("Ответили", "Answered by"),
    "state.transfers": ("Переводы", "Transfers"),
    "state.schemes": ("Схемы", "Schemes"),
    "state.owner": ("Ответственный", "Owner"),
    "state.sipuni_status": ("Статус Sipuni", "Sipuni status"),
    "state.times": ("Начало / ответ / конец", "Start / answer / end"),
    "state.finished_by": ("Завершён", "Finished"),
    "state.record": ("Запись", "Recording"),
    "state.listen": ("слушать", "listen"),
    "finished.hangup": ("по событию Sipuni", "by Sipuni's hang-up"),
    "finished.timeout": ("по таймауту (завершение не пришло)", "by timeout (no hang-up came)"),
    "finished.open": ("ещё идёт", "still going"),
    "routing.sees": ("Видит звонок", "Sees the call"),
    "routing.hidden": ("Не видит звонок", "Does not see the call"),
    "routing.none": (
        "Решение о маршрутизации не записано: интеграцию добавили после звонка (или звонок"
        " старше журнала решений). «Провести звонок заново» направит звонок ей.",
        "No routing decision is recorded: the integration was added after the call (or the"
        " call is older than the record of decisions). Replaying the call routes it.",
    ),
    "hooks.record": ("Вызов", "Hook call"),
    "hooks.status": ("Состояние", "Status"),
    "hooks.attempts": ("Попыток", "Attempts"),
    "hooks.next": ("Следующая попытка", "Next attempt"),
    "hooks.error": ("Ошибка", "Error"),
    "hooks.attempt": ("Попытка", "Attempt"),
    "hooks.dropped": (
        "Запросов и решений сверх предела не сохранено",
        "Requests and decisions past the limit, not kept",
    ),
    "attempt.done": ("выполнено", "done"),
    "attempt.retry": ("не удалось, будет повтор", "failed, to be retried"),
    "attempt.dead": ("не удалось, без повтора", "failed for good"),
    "requests.method": ("Запрос к CRM", "CRM request"),
    "requests.path": ("Путь", "Path"),
    "requests.status": ("HTTP", "HTTP"),
    "requests.outcome": ("Итог", "Outcome"),
    "requests.latency": ("Время", "Time"),
    "decision.text": ("Отправленный текст", "Text sent"),
    "unit.ms": ("мс", "ms"),
    "action.retry": ("Повторить", "Retry"),
    "action.drop": ("Отказаться", "Drop"),
    # integrations
    "integrations.title": ("Интеграции", "Integrations"),
    "integrations.name": ("Интеграция", "Integration"),
    "integrations.auth": ("Авторизация", "Authorisation"),
    "integrations.circuit": ("Предохранитель", "Circuit"),
    "integrations.budget": ("Лимит запросов", "Rate budget"),
    "integrations.budget_requests": ("запросов доступно за 2 с", "requests free within 2 s"),
    "integrations.running": ("Выполняется", "Running"),
    "integrations.last_error": ("Последняя ошибка", "Last error"),
    "integrations.none": ("Включённых интеграций нет.", "No integration is enabled."),
    "integrations.inbox": ("Событий ждёт обработки", "Events waiting"),
    "integrations.open_calls": ("Идущих звонков", "Calls going on"),
    "missed.title": (
        "Пропущенные и перезвоны за сутки",
        "Missed calls and callbacks, last 24 hours",
    ),
    "missed.missed": ("Пропущено", "Missed"),
    "missed.open": ("Без перезвона", "Not called back"),
    "missed.called_back": ("Перезвонили", "Called back"),
    "missed.none": ("Пропущенных звонков нет.", "No missed calls."),
    "auth.ok": ("в порядке", "ok"),
    "auth.auth_failed": ("ключ отклонён", "key refused"),
    "auth.cannot_connect": ("нет связи", "cannot connect"),
    "auth.not_checked": ("ещё не проверена", "not checked yet"),
    "circuit.closed": ("включён", "closed"),
    "circuit.open": ("разомкнут", "open"),
    "circuit.until": ("до", "until"),
    "circuit.failures": ("сбоев подряд", "failures in a row"),
    "dead.title": ("Неудавшиеся вызовы", "Dead letters"),
    "dead.integration": ("Интеграция", "Integration"),
    "dead.call": ("Звонок", "Call"),
    "dead.none": ("Неудавшихся вызовов нет.", "No dead letters."),
    "quarantine.title": ("События в карантине", "Quarantined events"),
    "quarantine.none": ("Карантин пуст.", "The quarantine is empty."),
    "rejected.title": ("Отклонённые вебхуки", "Rejected webhooks"),
    "rejected.reason": ("Причина", "Reason"),
    "rejected.none": ("Отклонённых вебхуков нет.", "No rejected webhooks."),
    # setup
    "setup.title": ("Настройка", "Setup"),
    "setup.account": ("Аккаунт", "Account"),
    "setup.webhook": ("Адрес для Sipuni", "The address for Sipuni"),
    "setup.copy": ("Копировать", "Copy"),
    "setup.no_public_url": (
        "server.public_url не задан: показан адрес, на котором слушает сервис. Sipuni должен"
        " достучаться до него из интернета.",
        "server.public_url is not set: this is the address the service listens on. Sipuni must"
        " reach it from the internet.",
    ),
    "setup.recent": (
        "Схемы и внутренние номера — по последним звонкам, их просмотрено",
        "Schemes and extensions come from the latest calls; calls looked at",
    ),
    "setup.schemes": ("Схемы, через которые шли звонки", "Schemes the calls went through"),
    "setup.scheme_number": ("Номер (treeNumber)", "Number (treeNumber)"),
    "setup.scheme_name": ("Название (treeName)", "Name (treeName)"),
    "setup.no_schemes": ("Звонков со схемами ещё не было.", "No call went through a scheme yet."),
    "setup.sipuni_schemes": ("Схемы в Sipuni", "Schemes in Sipuni"),
    "setup.sipuni_failed": (
        "Не удалось прочитать схемы из Sipuni",
        "Could not read the schemes from Sipuni",
    ),
    "setup.sipuni_unknown": (
        "В настройках есть схемы, которых нет в Sipuni: звонки по ним никогда не совпадут."
        " Исправьте их (список для копирования выше) и перезапустите сервис:",
        "The config names schemes Sipuni does not have: no call can ever match them. Correct"
        " them (the list to copy is above) and restart the service:",
    ),
    "setup.sipuni_did_you_mean": ("может быть,", "did you mean"),
    "setup.sipuni_no_key": (
        "Ключ интеграции Sipuni не задан (sipuni_api_key аккаунта): список схем из Sipuni"
        " не показан. Где взять ключ: docs/sipuni.md.",
        "No Sipuni integration key (the account's sipuni_api_key): Sipuni's list of schemes"
        " is not shown. Where to find the key: docs/sipuni.md.",
    ),
    "setup.extensions": ("Внутренние номера", "Extensions"),
    "setup.extension": ("Номер", "Extension"),
    "setup.calls": ("Звонков", "Calls"),
    "setup.mapped_in": ("Сопоставлен в", "Mapped in"),
    "setup.agent_page": ("Страница оператора", "Agent page"),
    "setup.unmapped": ("не сопоставлен", "not mapped"),
    "setup.unmapped_hint": (
        "Несопоставленные номера выделены: добавьте их в users интеграции, иначе звонки на них"
        " уйдут дежурному.",
        "Unmapped extensions are highlighted: add them to the integration's users, or their"
        " calls go to the on-duty agent.",
    ),
    "setup.no_extensions": ("Звонков ещё не было.", "No calls yet."),
    "setup.config": ("Действующие настройки", "The effective configuration"),
    "setup.config_hint": ("Секреты скрыты.", "Secrets are masked."),
    # what an action did
    "flash.retried": ("Поставлено в очередь снова.", "Queued again."),
    "flash.dropped": ("Отменено.", "Dropped."),
    "flash.not_dead": (
        "Этого вызова уже нет среди неудавшихся.",
        "That hook call is no dead letter (any more).",
    ),
    "flash.not_quarantined": (
        "Этого события уже нет в карантине.",
        "That event is not quarantined (any more).",
    ),
    "flash.no_events": ("У звонка нет сохранённых событий.", "The call has no stored events."),
    "flash.replayed": ("Звонок проведён заново.", "The call was replayed."),
    "flash.logged_out": ("Вы вышли.", "You are logged out."),
    "flash.called_back": (
        "Sipuni звонит на внутренний номер, затем клиенту.",
        "Sipuni is ringing the extension, then the client.",
    ),
    "flash.call_back_off": (
        "Звонки из коннектора выключены: у аккаунта нет sipuni_api_key.",
        "Click-to-call is off: the account has no sipuni_api_key.",
    ),
    "flash.call_back_no_number": (
        "Номер клиента скрыт: перезвонить нельзя.",
        "The client's number is hidden: it cannot be called back.",
    ),
    "flash.call_back_too_often": (
        "С этого номера звонили только что: подождите несколько секунд.",
        "That extension started a call moments ago: wait a few seconds.",
    ),
    "flash.call_back_refused": (
        "Sipuni отказал в звонке: причина записана в звонке ниже.",
        "Sipuni refused the call: the reason is recorded on the call below.",
    ),
    "flash.call_back_unavailable": (
        "Sipuni недоступен: причина записана в звонке ниже, попробуйте позже.",
        "Sipuni could not be reached: the reason is recorded on the call below; try later.",
    ),
    "flash.call_back_failed": ("Звонок не начат.", "The call was not started."),
    # refusals
    "error.csrf": (
        "Форма устарела: обновите страницу и повторите.",
        "The form has expired: reload the page and try again.",
    ),
    "error.signed_out": ("Войдите в консоль.", "Sign in to the console."),
    "error.remote": (
        "Консоль открыта только с этой машины. Чтобы открыть её по сети, задайте"
        " [console] allow_remote = true (и HTTPS: server.public_url).",
        "The console answers only on this machine. To open it to the network, set"
        " [console] allow_remote = true (and HTTPS: server.public_url).",
    ),
}


def translator(language: Language) -> Callable[[str], str]:
    """``t(key)``: the key's text in ``language``; an unknown key raises ``KeyError``."""
    index = LANGUAGES.index(language)

    def t(key: str) -> str:
        return TEXT[key][index]

    return t
