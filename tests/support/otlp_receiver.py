"""A local OTLP/HTTP receiver for the tests: every POST to /v1/traces is kept as a file
(<dir>/<n>.json) and answered 200 with an empty ExportTraceServiceResponse, as a collector does.
A body that is not JSON is answered 400. Usage: otlp_receiver.py PORT DIR"""
import http.server
import json
import os
import sys
import threading

port, folder = int(sys.argv[1]), sys.argv[2]
os.makedirs(folder, exist_ok=True)
lock = threading.Lock()
count = [0]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/json":
            self.send_response(404 if self.path != "/v1/traces" else 415)
            self.end_headers()
            return
        try:
            json.loads(body)
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        with lock:
            count[0] += 1
            name = os.path.join(folder, "%06d.json" % count[0])
        headers = {k.lower(): v for k, v in self.headers.items()}
        with open(name + ".tmp", "w") as f:
            json.dump({"headers": headers, "body": json.loads(body)}, f)
        os.rename(name + ".tmp", name)
        out = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
