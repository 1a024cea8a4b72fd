"""A tiny ASGI app for the dissection oracle, served by hypercorn (which accepts HTTP/1.1
`Upgrade: h2c`). Answers 404 under /missing, 200 elsewhere, with a short text body."""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while True:  # drain the request body
        event = await receive()
        if not event.get("more_body"):
            break
    path = scope["path"]
    status = 404 if path.startswith("/missing") else 200
    body = f"{scope['method']} {path} over HTTP/{scope['http_version']}\n".encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
