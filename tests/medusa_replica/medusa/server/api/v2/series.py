"""Medusa's /series, identified by slugs such as tvdb83462 (replica: a fixed list)."""

from medusa.server.api.v2.base import BaseRequestHandler

SERIES = {"tvdb83462": {"id": {"slug": "tvdb83462"}, "title": "Castle"}}


class SeriesHandler(BaseRequestHandler):
    name = "series"
    identifier = ("series_slug", r"\w+")
    path_param = ("path_param", r"\w+")
    allowed_methods = ("GET",)

    def get(self, series_slug, path_param=None):
        if not series_slug:
            return self.finish(self._ok(data=list(SERIES.values())))
        if series_slug not in SERIES:
            return self.finish(self._not_found("Series not found"))
        return self.finish(self._ok(data=SERIES[series_slug]))
