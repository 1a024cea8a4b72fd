"""The seed's story as real traffic, with its ground truth.

Roles (argv[1]) run in the namespace the test starts them in, on fixed addresses:
  servers-b  checkout 198.18.0.2:8080, gateway 198.18.0.4:8082, cart 198.18.0.6:8083,
             db 198.18.0.8:5432, pool 198.18.0.9:6379                       (namespace B)
  servers-a  payment 198.18.0.3:8081                                         (namespace A)
  clients    frontend 198.18.0.1, cart client 198.18.0.5, db client 198.18.0.7,
             pool client 198.18.0.10                                         (namespace A)
Calls: frontend -> checkout -> payment -> gateway. The gateway answers after 6 s for orders
whose number is a multiple of 5, and payment waits 5 s for it: those end in a 503 from payment,
which checkout passes on. 3 of the 25 frontend requests (12 %) carry no X-Request-Id; checkout
and payment pass the id on. The cart client sends each request three times 40 ms apart. The
db client opens a new connection per query, to a protocol nobody dissects. The pool server
holds at most 2 connections and resets the others (SO_LINGER 0).

Every role appends its ground truth as JSON lines to argv[2] (the log): what it sent, what it
answered, what it reset.
"""
import http.client
import http.server
import json
import socket
import socketserver
import struct
import sys
import threading
import time

ROLE, LOG = sys.argv[1], sys.argv[2]
lock = threading.Lock()


def log(kind, **fields):
    with lock, open(LOG, "a") as f:
        f.write(json.dumps({"kind": kind, "t": time.time(), **fields}) + "\n")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def handler(name, route):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, reply = route(self.path, body, self.headers.get("X-Request-Id"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            log("served", service=name, path=self.path, status=status,
                request_id=self.headers.get("X-Request-Id") or "")

        do_GET = do_POST

        def log_message(self, *a):
            pass

    return H


def call(source, host, port, path, body, request_id, timeout):
    """One HTTP call from `source`; returns the status, or None on a timeout."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0))
    headers = {"Content-Type": "application/json"}
    if request_id:
        headers["X-Request-Id"] = request_id
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        # Read to the end: closing with unread bytes would make the kernel send a RST.
        response.read()
        return response.status
    except (socket.timeout, TimeoutError):
        return None
    finally:
        conn.close()


def serve(addr, port, name, route):
    s = Server((addr, port), handler(name, route))
    threading.Thread(target=s.serve_forever, daemon=True).start()


def checkout(path, body, rid):
    status = call("198.18.0.2", "198.18.0.3", 8081, "/api/v1/pay", body, rid, 10)
    return (200 if status == 200 else 503), b'{"checkout": "done"}'


def payment(path, body, rid):
    status = call("198.18.0.3", "198.18.0.4", 8082, "/v1/charge", body, rid, 5)
    if status is None:
        log("gateway_timeout", request_id=rid or "", order=json.loads(body)["order"])
        return 503, b'{"error": "payment gateway timeout"}'
    return 200, b'{"paid": true}'


def gateway(path, body, rid):
    order = json.loads(body)["order"]
    time.sleep(6 if order % 5 == 0 else 0.03)
    return 200, b'{"authorized": true}'


def cart(path, body, rid):
    return 200, b'{"items": 3}'


def db_server(srv):
    """Answers one query per connection: 4-byte length, payload; then closes."""
    while True:
        c, _ = srv.accept()
        with c:
            n = struct.unpack("!I", c.recv(4))[0]
            c.recv(n)
            c.sendall(struct.pack("!I", 2) + b"ok")


def pool_server(srv):
    """Keeps up to 2 connections; resets every other one at once."""
    held = []
    while True:
        c, peer = srv.accept()
        if len(held) < 2:
            held.append(c)
            continue
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        log("reset", port=peer[1])


def servers_up():
    """Waits for both server roles to log `up` (they listen before they log). Probing the
    ports instead would add connections, and resets while a server is not up yet, that the
    ground truth does not count."""
    for _ in range(400):
        try:
            with open(LOG) as f:
                up = {json.loads(line).get("role") for line in f if '"up"' in line}
            if {"servers-a", "servers-b"} <= up:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise SystemExit("the servers never came up")


if ROLE == "servers-b":
    serve("198.18.0.2", 8080, "checkout", checkout)
    serve("198.18.0.4", 8082, "gateway", gateway)
    serve("198.18.0.6", 8083, "cart", cart)
    db = socket.create_server(("198.18.0.8", 5432), reuse_port=True)
    pool = socket.create_server(("198.18.0.9", 6379), reuse_port=True)
    threading.Thread(target=db_server, args=(db,), daemon=True).start()
    threading.Thread(target=pool_server, args=(pool,), daemon=True).start()
    log("up", role=ROLE)
    while True:
        time.sleep(1)
elif ROLE == "servers-a":
    serve("198.18.0.3", 8081, "payment", payment)
    log("up", role=ROLE)
    while True:
        time.sleep(1)
else:
    servers_up()
    threads = []

    def order(n):
        rid = "" if n % 25 < 3 else f"req-{n:04d}"
        body = json.dumps({"order": n}).encode()
        status = call("198.18.0.1", "198.18.0.2", 8080, "/api/v1/checkout", body, rid, 15)
        log("frontend", order=n, status=status, request_id=rid)

    # 25 orders, 5 of them (0, 5, 10, 15, 20) behind the gateway's 6 s: in parallel, so the
    # scenario takes one timeout, not five.
    for n in range(25):
        t = threading.Thread(target=order, args=(n,))
        t.start()
        threads.append(t)
        time.sleep(0.02)

    # The cart client: 10 requests, each sent 3 times 40 ms apart (a retry storm), 300 ms
    # between different requests.
    for i in range(10):
        body = json.dumps({"add": i}).encode()
        for attempt in range(3):
            status = call("198.18.0.5", "198.18.0.6", 8083, "/api/v1/cart/add", body, "", 5)
            log("cart_request", item=i, attempt=attempt, status=status)
            time.sleep(0.04)
        time.sleep(0.3)

    # The db client: 40 queries, a new connection each.
    for i in range(40):
        s = socket.create_connection(("198.18.0.8", 5432), source_address=("198.18.0.7", 0))
        q = f"SELECT {i}".encode()
        s.sendall(struct.pack("!I", len(q)) + q)
        s.recv(6)
        s.close()
        log("db_connection", query=i)
        time.sleep(0.01)

    # The pool client: 6 connections held open; the server keeps 2 and resets 4.
    pool = []
    for i in range(6):
        s = socket.create_connection(("198.18.0.9", 6379), source_address=("198.18.0.10", 0))
        pool.append(s)
        log("pool_connection", port=s.getsockname()[1])
        time.sleep(0.05)
    time.sleep(0.3)
    for s in pool:
        s.close()

    for t in threads:
        t.join()
    log("done", role=ROLE)
