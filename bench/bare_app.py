"""The HTTP limit: a bare Falcon app that answers 202 to POST /v1/events and does nothing
else, served by the same gunicorn configuration behind the same nginx as auditlog.

    gunicorn -c deploy/gunicorn.conf.py bench.bare_app:app
"""

import falcon


class Accept:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.bounded_stream.read()
        resp.status = falcon.HTTP_202
        resp.data = b'{"accepted":1}'
        resp.content_type = falcon.MEDIA_JSON


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = b'{"status":"ok"}'


app = falcon.App()
app.add_route("/v1/events", Accept())
app.add_route("/healthz", Health())
