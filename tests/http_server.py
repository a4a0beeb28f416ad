"""A small HTTP server on 127.0.0.1 in a thread, for the download tests (nothing reaches the internet)."""
from __future__ import annotations

import http.server
import threading


class Server:
    """http.server in a thread. ``mode``: ok (honours Range), drop (sends half of what is asked, then
    closes), drop_once (drop for the first request only); ``only``: the paths the mode applies to
    (None: all)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.mode, self.requests, self.only = files, "ok", [], None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                outer.requests.append((self.path, self.headers.get("Range")))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[len("bytes="):].rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                rest = body[start:]
                self.send_header("Content-Length", str(len(rest)))
                self.end_headers()
                dropping = outer.mode == "drop" or (outer.mode == "drop_once" and len(outer.requests) == 1)
                dropping = dropping and (outer.only is None or self.path in outer.only)
                self.wfile.write(rest[: len(rest) // 2] if dropping else rest)
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
