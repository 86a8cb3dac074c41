"""Flower's settings: `celery -A auditlog.tasks.worker flower --conf=deploy/flowerconfig.py`.

Flower (tornado) executes this file and reads the names below that match its options. The
credentials come from the auditlog settings (AUDITLOG_FLOWER_USER, AUDITLOG_FLOWER_PASSWORD);
without a password Flower does not start. The address and port come from the command line.

Every path asks for the password, on Flower's own port and through nginx alike: Flower
itself leaves some open (/metrics and /healthcheck show host names, task names, memory;
/logout, /static/), so each of its routes is served, below, by a subclass that checks the
password before anything else. Its control API is off (read-only mode: 403) unless
AUDITLOG_FLOWER_CONTROL=true.
"""

from typing import Any

from flower import urls
from flower.views import BaseHandler
from tornado import web

from auditlog.settings import Settings, SettingsError

_settings = Settings.from_env()
if not _settings.flower_password:
    raise SettingsError(
        "AUDITLOG_FLOWER_PASSWORD is empty: Flower is only served behind basic auth "
        "(`make run` keeps a generated one in .env)"
    )

basic_auth = [f"{_settings.flower_user}:{_settings.flower_password}"]
# Served under /flower/, on its own port and behind nginx alike (nginx passes the path on).
url_prefix = "flower"
# Workers gone for a minute (stopped, scaled down) leave the dashboard.
purge_offline_workers = 60
# Shutting workers down, resizing pools, revoking, rate-limiting and sending tasks.
read_only = not _settings.flower_control


class PasswordFirst(web.RequestHandler):
    """Whatever the path and the method, the password comes first (Flower's own check,
    which its static files and some pages never make)."""

    def _password_given(self) -> bool:
        try:
            return bool(BaseHandler.get_current_user(self))  # type: ignore[arg-type]
        except web.HTTPError:
            return False

    def check_xsrf_cookie(self) -> None:
        # tornado checks a POST's XSRF token before prepare(): without the password, the
        # answer is prepare()'s 401, not a 403 that tells the path exists.
        if self._password_given():
            super().check_xsrf_cookie()

    def prepare(self) -> Any:
        if not self._password_given():
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Basic realm="flower"')
            self.finish("Access denied")
            return None
        return super().prepare()


def _guarded(handler_class: type[web.RequestHandler]) -> type[web.RequestHandler]:
    return type(handler_class.__name__, (PasswordFirst, handler_class), {})


def _password_first(handler: Any) -> Any:
    if isinstance(handler, web.URLSpec):
        guarded = _guarded(handler.handler_class)
        return web.url(handler.regex.pattern, guarded, handler.kwargs, handler.name)
    pattern, handler_class, *rest = handler
    return (pattern, _guarded(handler_class), *rest)


# Flower builds its routes from this list, and its tornado application from these settings,
# when it starts, after reading this file. tornado adds routes of its own for the static
# files (and /favicon.ico, /robots.txt), served by the static handler class.
urls.handlers[:] = [_password_first(handler) for handler in urls.handlers]
urls.settings["static_handler_class"] = _guarded(web.StaticFileHandler)
