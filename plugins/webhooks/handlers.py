"""The webhooks REST routes: ``/api/webhooks``, ``/api/webhooks/:id``,
``/api/webhooks/:id/deliveries`` and ``/api/webhooks/:id/test``.

Every signed-in user manages their own webhooks; another user's is "not found" (404), the same
answer as an id that does not exist. The signing secret is shown once, in the answer to the
creation.
"""

from __future__ import annotations

from vachat.plugin_api import ApiHandler, Route, endpoint

from .service import SERVICE, WebhooksService

__all__ = ["ROUTES"]


class _WebhooksHandler(ApiHandler):
    @property
    def webhooks(self) -> WebhooksService:
        return self.app.service(SERVICE)


class WebhooksHandler(_WebhooksHandler):
    @endpoint("List my webhooks", response="webhooks/webhook-list", tags=("webhooks",))
    async def get(self) -> None:
        self.respond(await self.webhooks.of_owner(self.caller.id))

    @endpoint("Create a webhook", body="webhooks/webhook-create", response="webhooks/webhook-created", status=201,
              tags=("webhooks",), errors=(400,),
              description="The answer carries the signing `secret` (`whsec_…`), shown only this once. The URL "
                          "must be http(s) and resolve to public addresses only.")
    async def post(self) -> None:
        body = self.body
        created = await self.webhooks.create(self.caller.id, body["url"], body["events"], body.get("description", ""))
        self.respond(created, status=201, message="Webhook created; keep its secret, it is shown only once")


class WebhookHandler(_WebhooksHandler):
    @endpoint("A webhook of mine", response="webhooks/webhook", tags=("webhooks",), errors=(404,))
    async def get(self, webhook_id: str) -> None:
        self.respond(await self.webhooks.get(self.caller.id, webhook_id))

    @endpoint("Change a webhook", body="webhooks/webhook-update", response="webhooks/webhook", tags=("webhooks",),
              errors=(400, 404),
              description="`isActive: true` turns a webhook the server disabled for failing back on.")
    async def patch(self, webhook_id: str) -> None:
        self.respond(await self.webhooks.update(self.caller.id, webhook_id, self.body))

    @endpoint("Delete a webhook and its deliveries", response="webhooks/deleted", tags=("webhooks",), errors=(404,))
    async def delete(self, webhook_id: str) -> None:
        await self.webhooks.delete(self.caller.id, webhook_id)
        self.respond({"id": webhook_id}, message="Webhook deleted")


class DeliveriesHandler(_WebhooksHandler):
    @endpoint("A webhook's deliveries, newest first", query="webhooks/delivery-query",
              response="webhooks/delivery-list", tags=("webhooks",), errors=(404,))
    async def get(self, webhook_id: str) -> None:
        page, limit = self.query["page"], self.query["limit"]
        items, total = await self.webhooks.deliveries(self.caller.id, webhook_id, page=page, limit=limit,
                                                      status=self.query.get("status"))
        self.respond(items, pagination={"page": page, "limit": limit, "total": total,
                                        "totalPages": (total + limit - 1) // limit})


class SendTestHandler(_WebhooksHandler):
    @endpoint("Send a test event (webhook.test) to this webhook", response="webhooks/delivery", status=202,
              tags=("webhooks",), errors=(404,))
    async def post(self, webhook_id: str) -> None:
        self.respond(await self.webhooks.send_test(self.caller.id, webhook_id), status=202,
                     message="Test delivery queued")


ROUTES: list[Route] = [
    (r"/api/webhooks", WebhooksHandler),
    (r"/api/webhooks/([^/]+)", WebhookHandler),
    (r"/api/webhooks/([^/]+)/deliveries", DeliveriesHandler),
    (r"/api/webhooks/([^/]+)/test", SendTestHandler),
]
